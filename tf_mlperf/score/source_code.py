"""The code a campaign ran, recorded when its runs start and shipped in the package as it was then.

`record_code(folder)` (tf-mlperf-campaign, before the first run) returns what campaign.json keeps under "code":
the git commit of this checkout, a sha256 of its uncommitted changes (`git diff HEAD --binary`) and of every
untracked file of the source folders (tf_mlperf/, data_prep/, scripts/, flags/), and writes those changes
beside campaign.json (`source.diff`, `source_untracked/<path>`). `ship_code(record, folder, dest)`
(tf-mlperf-package) rebuilds exactly that tree: the commit's files (`git archive`), the diff applied, the
untracked files copied; a commit this checkout does not have, or a saved change that does not match its
hash, is refused. So the package's code is the code of the runs, whatever was committed or edited since.
"""
from __future__ import annotations

import hashlib
import io
import pathlib
import shutil
import subprocess
import tarfile
from tf_mlperf.base.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("tf_mlperf", "data_prep", "scripts", "flags")   # where an untracked file can be code the runs used
DIFF_FILE = "source.diff"
UNTRACKED_DIR = "source_untracked"


def _git(repo: pathlib.Path, *args: str) -> bytes:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError) as err:
        stderr = getattr(err, "stderr", b"") or b""
        raise UserError(f"git {' '.join(args)} in {repo} failed: "
                        f"{stderr.decode(errors='replace').strip() or err}") from err


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(repo: pathlib.Path = REPO) -> tuple[dict, bytes, dict[str, bytes]]:
    """(record, diff, {untracked path: bytes}) of the checkout now."""
    commit = _git(repo, "rev-parse", "HEAD").decode().strip()
    diff = _git(repo, "diff", "HEAD", "--binary")
    listed = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", *SOURCE_DIRS).decode()
    untracked = {p: (repo / p).read_bytes() for p in sorted(filter(None, listed.split("\0"))) if (repo / p).is_file()}
    record = {"repo": str(repo), "commit": commit, "dirty": bool(diff.strip()),
              "diff_sha256": _sha256(diff) if diff.strip() else None,
              "untracked": [[p, _sha256(data)] for p, data in untracked.items()]}
    return record, diff, untracked


def record_code(folder: pathlib.Path, repo: pathlib.Path = REPO) -> dict:
    """The "code" entry of campaign.json, its changes saved in `folder`; {"error": ...} when there is no git
    checkout to record (the campaign still runs; the package will refuse)."""
    try:
        record, diff, untracked = snapshot(repo)
    except UserError as err:
        return {"repo": str(repo), "commit": None, "error": str(err)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DIFF_FILE).unlink(missing_ok=True)
    shutil.rmtree(folder / UNTRACKED_DIR, ignore_errors=True)
    if record["dirty"]:
        (folder / DIFF_FILE).write_bytes(diff)
    for path, data in untracked.items():
        target = folder / UNTRACKED_DIR / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return record


def describe(record: dict) -> str:
    if not record.get("commit"):
        return "unknown"
    parts = [record["commit"][:12]]
    if record.get("dirty"):
        parts.append(f"uncommitted changes sha256 {record['diff_sha256'][:12]}")
    if record.get("untracked"):
        parts.append(f"{len(record['untracked'])} untracked file(s)")
    return ", ".join(parts)


def check_record(record, manifest: pathlib.Path) -> dict:
    """The campaign.json "code" entry, or a refusal naming what is missing."""
    if not isinstance(record, dict) or not record.get("commit"):
        why = (record or {}).get("error") if isinstance(record, dict) else None
        raise UserError(f"{manifest}: no record of the code the runs used ("
                        + (why or "written by a tf-mlperf-campaign that did not record it")
                        + "): the package must ship the code that produced the logs; rerun the campaign from a git "
                        "checkout")
    if record.get("dirty") and not record.get("diff_sha256"):
        raise UserError(f"{manifest}: code record says uncommitted changes but gives no diff_sha256")
    return record


def ship_code(record: dict, folder: pathlib.Path, dest: pathlib.Path, repo: pathlib.Path = REPO) -> list[str]:
    """Writes the runs' source tree into dest (the commit, its recorded changes, its untracked files) and returns
    its file list. folder: where campaign.json and its saved changes are."""
    commit = record["commit"]
    try:
        _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    except UserError:
        raise UserError(f"the runs used commit {commit} ({folder / 'campaign.json'}), which this checkout ({repo}) "
                        "does not have: fetch it, or package from the checkout that ran the campaign") from None
    archive = _git(repo, "archive", "--format=tar", commit)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    if record.get("dirty"):
        diff_path = folder / DIFF_FILE
        diff = diff_path.read_bytes() if diff_path.is_file() else None
        if diff is None or _sha256(diff) != record["diff_sha256"]:
            raise UserError(f"{diff_path}: {'missing' if diff is None else 'changed since the runs'} (campaign.json "
                            f"records uncommitted changes with sha256 {record['diff_sha256']}): the code of the runs "
                            "cannot be rebuilt")
        proc = subprocess.run(["git", "apply", "--whitespace=nowarn", str(diff_path.resolve())], cwd=dest,
                              capture_output=True, text=True)
        if proc.returncode:
            raise UserError(f"{diff_path} does not apply to commit {commit[:12]}: {proc.stderr.strip()}")
    for path, digest in record.get("untracked", []):
        source = folder / UNTRACKED_DIR / path
        data = source.read_bytes() if source.is_file() else None
        if data is None or _sha256(data) != digest:
            raise UserError(f"{source}: {'missing' if data is None else 'changed since the runs'} (an untracked file "
                            "of the runs' code, recorded in campaign.json)")
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(data)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def same_as_checkout(record: dict, repo: pathlib.Path = REPO) -> bool:
    """Whether this checkout holds exactly the runs' code now (informational: the package ships the record)."""
    try:
        now, _, _ = snapshot(repo)
    except UserError:
        return False
    return all(now.get(k) == record.get(k) for k in ("commit", "dirty", "diff_sha256", "untracked"))


def check_logs_match_tree(logs: list[pathlib.Path], tree: pathlib.Path, read_events, repo: str) -> str | None:
    """Every log's seed event names the file:line that logged it (relative to the checkout, or absolute in the
    checkout `repo` that ran); that line must log a seed in the shipped tree, else the logs came from other code
    than the code packaged. Returns the first refusal, or None."""
    for path in logs:
        for event in read_events(path).all("seed"):
            meta = event.metadata
            name = pathlib.PurePath(str(meta.get("file", "")))
            if name.is_absolute() and name.is_relative_to(repo):
                name = name.relative_to(repo)
            source = tree / name if not name.is_absolute() else None
            source = source if source is not None and source.resolve().is_relative_to(tree.resolve()) else None
            lines = source.read_text(errors="replace").splitlines() if source and source.is_file() else []
            lineno = int(meta.get("lineno", 0) or 0)
            if not (0 < lineno <= len(lines) and "SEED" in lines[lineno - 1].upper()):
                return (f"{path}: its seed was logged at {meta.get('file')}:{lineno}, which does not log a seed in "
                        "the code campaign.json records for these runs: the logs were written by another version of "
                        "the code")
    return None
