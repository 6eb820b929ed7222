"""tf-mlperf-infer: an exported ResNet-50 (tf-mlperf-export) or BERT (tf-mlperf-export-bert) under MLPerf
Inference LoadGen.

    tf-mlperf-infer --model /models/r50 --data_dir /data/imagenet --scenario Offline \
        [--accuracy] [--user_conf user.conf] [--output out/] [--max_batchsize 32] [--preprocessing inference]
    tf-mlperf-infer --benchmark bert --model /models/bert --squad_json dev-v1.1.json --scenario Offline \
        [--accuracy] [--user_conf user.conf] [--output out/] [--max_batchsize 32] [--vocab_file vocab.txt]

--benchmark=bert (the reference's language/bert, see squad_dataset.py): mlperf.conf's model "bert", the
scenarios SingleStream, Server and Offline; the QSL is the SQuAD JSON's features, all in memory; the SUT answers
each feature with its logits [384, 2] as float32 (tf_SUT.py's bytes); accuracy.txt holds accuracy-squad.py's
line ({"exact_match": .., "f1": ..}). What follows describes ResNet-50; the settings, SUT batching and output
handling are the same for both.

As the inference reference (vision/classification_and_detection/python/main.py, profile resnet50-tf):
* settings: LoadGen's built-in mlperf.conf (LoadGen compiles it in since 5.0 and applies it when the user.conf
  is read) for the model "resnet50", then --user_conf (settings.FromConfig), then scenario and mode. LoadGen
  ignores keys it does not know without a word; we refuse them first, naming the file and line.
* QSL: the validation records of --data_dir (dataset.py); LoadGen's load_query_samples reads and
  preprocesses just the samples it names into memory, unload_query_samples drops them; the performance
  sample count is min(total, 500) as in the reference (mlperf.conf sets 1024 for resnet50).
* SUT: issue_queries queues each query whole; one worker cuts batches of up to --max_batchsize from them in
  issue order (Offline: full batches, the last one filled up to that size; Server: what arrived while the
  previous batch ran; SingleStream: 1; MultiStream: the query's 8), runs the SavedModel and answers each sample
  with ArgMax - 1 (the reference's PostProcessCommon(offset=-1)) as one float32, as the reference runner encodes it.
* output: LoadGen's own mlperf_log_summary.txt, mlperf_log_detail.txt, mlperf_log_accuracy.json (and
  mlperf_log_trace.json), in --output; in accuracy mode also accuracy.txt (accuracy.py's line).
LoadGen writes into <output>/.partial; the files move to <output> only when the run completed and every
sample was answered by the model, so an interrupted or failed run leaves no summary that looks valid (and no
.partial: a failure is one line, Ctrl-C one line and exit 130, SIGTERM exit 143).
--compliance TEST01|TEST04 runs a compliance test (loadgen_files.py writes its audit.config);
tf-mlperf-infer-submission (submission.py) verifies it and builds the results tree.
"""
from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import sys
import threading
import time

import numpy as np

from tf_mlperf.inference import accuracy as accuracy_lib
from tf_mlperf.inference.dataset import PREPROCESSING, ValidationRecords, preprocessor
from tf_mlperf.inference.loadgen_files import (ACCURACY_FILE, COMPLIANCE_TESTS, LOADGEN_KEYS, LOG_FILES,  # noqa: F401
                                               RUN_FILES, audit_config, check_output, check_user_conf,
                                               loadgen_errors, prepare_output, summary_result)
from tf_mlperf.base.errors import UserError, run_cli

MODEL_NAME = "resnet50"                 # the model's name in mlperf.conf / user.conf
SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
INTERRUPT_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}   # as a shell reports a process killed by them
BENCHMARKS = (MODEL_NAME, "bert")      # bert: squad_dataset.py, imported for that benchmark only
RESULT_OFFSET = -1                      # PostProcessCommon(offset=-1): 1001-class ArgMax -> 0..999
PERFORMANCE_SAMPLE_COUNT = 500          # the reference's default: min(count, 500)


class SampleLibrary:
    """The QSL's data: preprocessed samples held in memory between LoadGen's load and unload calls."""

    def __init__(self, records: ValidationRecords, image_size: int, preprocessing: str, threads: int = 4):
        self.records, self.image_size = records, image_size
        self.preprocess = preprocessor(preprocessing)
        self.threads = threads
        self.loaded: dict[int, np.ndarray] = {}

    def load(self, indices) -> None:
        from concurrent.futures import ThreadPoolExecutor
        todo = sorted(set(indices) - set(self.loaded))

        def one(i):
            jpeg, _ = self.records.jpeg_and_label(i)
            return i, self.preprocess(jpeg, self.image_size)
        with ThreadPoolExecutor(self.threads) as pool:
            self.loaded.update(pool.map(one, todo))

    def unload(self, indices) -> None:
        for i in indices:
            self.loaded.pop(i, None)

    def batch(self, indices) -> np.ndarray:
        return np.stack([self.loaded[i] for i in indices])


class ImageNetWorkload:
    """What tf-mlperf-infer runs for resnet50: the validation records, the SUT's answer per sample (ArgMax - 1 as
    one float32) and the top-1 accuracy."""
    model_name = MODEL_NAME

    def __init__(self, args):
        self.records = ValidationRecords(args.data_dir, args.count)
        self.count = len(self.records)
        self.performance_sample_count = min(self.count, PERFORMANCE_SAMPLE_COUNT)
        self.preprocessing, self.samples, self.predict = args.preprocessing, None, None

    def load_model(self, path: str) -> None:
        from tf_mlperf.inference import export as export_lib
        self.predict, image_size = export_lib.load_saved_model(path)
        self.samples = SampleLibrary(self.records, image_size, self.preprocessing)

    def load(self, indices) -> None:
        self.samples.load(indices)

    def unload(self, indices) -> None:
        self.samples.unload(indices)

    def warm_up(self, max_batchsize: int) -> None:
        self.samples.load([0])          # as the reference: first calls trace and allocate
        for batch in {1, min(max_batchsize, self.count)}:
            self.predict(self.samples.batch([0] * batch))
        self.samples.unload([0])

    def respond(self, indices) -> np.ndarray:
        classes = self.predict(self.samples.batch(indices))
        return (np.asarray(classes) + RESULT_OFFSET).astype(np.float32).reshape(len(indices), 1)

    def accuracy(self, entries) -> str:
        return accuracy_lib.format_result(*accuracy_lib.top1(entries, self.records.labels()))

    def close(self) -> None:
        self.records.close()


class BatchingSUT:
    """LoadGen's SUT: a queue of samples and one worker that runs them in batches of up to max_batchsize;
    `respond(indices)` gives one row of response bytes per sample (a 2-D array). With `pad_to_full`, a shorter batch
    is run filled up to max_batchsize with copies of its last sample (their rows dropped): every sample is then
    answered from a batch of one shape. A CPU's matrix kernels round a row of a batch of 6 otherwise than the same
    row in a batch of 32 (BERT's logits: 3 of 550 TEST01 samples differed in their last bits), and TEST01 compares
    the accuracy run's answers with the performance run's bit for bit."""

    def __init__(self, respond, max_batchsize: int, pad_to_full: bool = False):
        import mlperf_loadgen as lg
        self.lg, self.respond, self.max_batchsize, self.pad_to_full = lg, respond, max_batchsize, pad_to_full
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.answered = 0
        self.worker = threading.Thread(target=self._work, name="sut-worker", daemon=True)
        self.worker.start()

    def issue_queries(self, query_samples) -> None:
        self.queue.put(list(query_samples))     # one item per query: the worker never sees half of one

    def flush_queries(self) -> None:
        pass

    def _work(self) -> None:
        """Batches of max_batchsize cut from the queries in the order they were issued (a whole Offline query is
        queued at once, so its batches are the same in every run: the same sample gets the same batch shape, and
        hence bit-equal answers, in accuracy and performance mode, as TEST01 checks), topped up with whatever else
        is queued (Server); None ends the worker after what is pending."""
        pending, stopping = [], False
        while pending or not stopping:
            if not pending:
                item = self.queue.get()
                if item is None:
                    stopping = True
                    continue
                pending.extend(item)
            while not stopping and len(pending) < self.max_batchsize:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    pending.extend(item)
            batch, pending = pending[:self.max_batchsize], pending[self.max_batchsize:]
            self._run(batch)

    def _run(self, batch) -> None:
        results = np.zeros((len(batch), 1), np.float32)
        try:
            if self.error is None:
                indices = [s.index for s in batch]
                if self.pad_to_full:
                    indices += indices[-1:] * (self.max_batchsize - len(indices))
                rows = np.ascontiguousarray(self.respond(indices))
                if rows.ndim != 2 or len(rows) != len(indices):
                    raise ValueError(f"{len(indices)} samples answered with an array of shape {rows.shape}")
                results = rows[:len(batch)]                 # the fill's rows are dropped
                self.answered += len(batch)
        except BaseException as e:   # pylint: disable=broad-except  (LoadGen must still get its answers)
            self.error = self.error or e
        # LoadGen copies the response bytes (accuracy mode) inside QuerySamplesComplete: `results` outlives it.
        address, size = results.ctypes.data, results.strides[0]
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, address + size * i, size)
                                      for i, s in enumerate(batch)])

    def stop(self) -> None:
        self.queue.put(None)
        self.worker.join()


def check_saved_model(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise UserError(path, "no SavedModel here (saved_model.pb): write one with tf-mlperf-export")


def check_benchmark_args(args) -> None:
    """The flags each benchmark needs, and its scenarios."""
    if args.benchmark == MODEL_NAME:
        if not args.data_dir:
            raise UserError("--data_dir", "is required for --benchmark=resnet50: the ImageNet TFRecords folder "
                            "tf-mlperf-prep-imagenet wrote")
        return
    from tf_mlperf.inference import squad_dataset
    if not args.squad_json:
        raise UserError("--squad_json", "is required for --benchmark=bert: the SQuAD v1.1 dev set "
                        "(dev-v1.1.json; docs/inference.md says where to get it)")
    ignored = [flag for flag, given in (("--data_dir", args.data_dir), ("--count", args.count),
                                        ("--preprocessing", args.preprocessing != "inference")) if given]
    if ignored:
        raise UserError(ignored[0], "is for --benchmark=resnet50 only; drop it (a smaller run: a smaller "
                        "SQuAD JSON)")
    if args.scenario not in squad_dataset.SCENARIOS:
        raise UserError(f"--scenario={args.scenario}", f"bert runs {', '.join(squad_dataset.SCENARIOS)} "
                        "(the inference rules' scenarios for bert)")


def run(args) -> int:
    check_benchmark_args(args)
    if args.user_conf:
        check_user_conf(args.user_conf, args.benchmark)
    if args.audit_conf and not os.path.isfile(args.audit_conf):
        raise UserError(args.audit_conf, "no such audit config")
    check_saved_model(args.model)
    with Interrupts("tf-mlperf-infer") as interrupts:
        if args.benchmark == MODEL_NAME:
            workload = ImageNetWorkload(args)
        else:
            from tf_mlperf.inference import squad_dataset
            workload = squad_dataset.SquadWorkload(args.model, args.squad_json, args.vocab_file)
        try:
            line = run_loadgen(args, workload, interrupts)
        finally:
            workload.close()
    print(line)
    return 0


class Interrupts:
    """Ctrl-C or SIGTERM while tf-mlperf-infer runs: the .partial folder goes, one line says so, the exit status is
    130 (SIGTERM: 143). LoadGen's StartTest holds the main thread in C++, where Python runs no signal handler
    until it returns, so a thread waits on the signals' wakeup fd and ends the process itself."""

    def __init__(self, prog: str):
        self.prog, self.partial = prog, None

    def __enter__(self):
        import socket
        self.receive, self.send = socket.socketpair()
        self.send.setblocking(False)
        self.previous = {number: signal.signal(number, lambda *_: None) for number in INTERRUPT_EXIT}
        self.previous_fd = signal.set_wakeup_fd(self.send.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._wait, name="interrupts", daemon=True).start()
        return self

    def _wait(self) -> None:
        number = None
        while number not in INTERRUPT_EXIT:       # the wakeup fd gets every signal Python handles; 0: done
            number = self.receive.recv(1)[0]
            if number == 0:
                return
        if self.partial:
            shutil.rmtree(self.partial, ignore_errors=True)
        print(f"{self.prog}: error: interrupted by {signal.Signals(number).name}: no result written"
              f"{f' ({self.partial} removed)' if self.partial else ''}", file=sys.stderr, flush=True)
        os._exit(INTERRUPT_EXIT[number])

    def __exit__(self, *_):
        signal.set_wakeup_fd(self.previous_fd)
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.send.send(b"\0")           # ends the waiting thread
        self.send.close()


def run_loadgen(args, workload, interrupts) -> str:
    """One LoadGen test as args say; returns the result line. Logs end up in args.output only if complete: a
    failed or interrupted run leaves no .partial folder either."""
    import mlperf_loadgen as lg
    output = os.path.abspath(args.output)
    check_output(output, args.overwrite)
    workload.load_model(args.model)        # a model the harness cannot run is refused before anything is written
    interrupts.partial = partial = prepare_output(output, args.overwrite)
    try:
        return _run_loadgen(args, workload, lg, output, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _run_loadgen(args, workload, lg, output: str, partial: str) -> str:
    settings = lg.TestSettings()
    if args.user_conf:
        status = settings.FromConfig(os.path.abspath(args.user_conf), workload.model_name, args.scenario)
    else:
        status = settings.FromConfig("", workload.model_name, args.scenario, 0)   # the built-in mlperf.conf only
    if status != 0:
        raise UserError(args.user_conf or "mlperf.conf", f"LoadGen could not read it (error {status})")
    settings.scenario = getattr(lg.TestScenario, args.scenario)
    settings.mode = lg.TestMode.AccuracyOnly if args.accuracy else lg.TestMode.PerformanceOnly
    if args.qps:                        # as the reference's --qps (not for a submission: use user.conf)
        settings.server_target_qps = settings.offline_expected_qps = float(args.qps)
    audit = os.path.abspath(args.audit_conf) if args.audit_conf else ""
    if args.compliance:                 # our audit.config of the test, kept beside the logs
        audit = os.path.join(partial, "audit.config")
        with open(audit, "w") as f:
            f.write(audit_config(args.compliance))

    try:                                    # as the reference: first calls trace and allocate
        workload.warm_up(args.max_batchsize)
    except Exception as e:   # pylint: disable=broad-except  (TF raises many kinds)
        raise UserError(args.model, f"the model failed on its warm-up batches ({one_line(e)})") from e
    sut = BatchingSUT(workload.respond, args.max_batchsize, pad_to_full=args.scenario == "Offline")
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    lg_qsl = lg.ConstructQSL(workload.count, workload.performance_sample_count, workload.load, workload.unload)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = partial
    log_settings.log_output.copy_summary_to_stdout = args.verbose
    log_settings.enable_trace = False
    started = time.time()
    try:
        lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log_settings, audit)
    finally:
        sut.stop()
        lg.DestroyQSL(lg_qsl)
        lg.DestroySUT(lg_sut)
    if sut.error is not None:
        raise UserError(args.model, f"the model failed during the run ({one_line(sut.error)}): no result "
                        "written") from sut.error
    summary = os.path.join(partial, "mlperf_log_summary.txt")
    if not os.path.isfile(summary):
        raise UserError("LoadGen", f"wrote no summary ({loadgen_errors(partial)}): no result written")
    line = f"{args.scenario} {'accuracy' if args.accuracy else 'performance'}: {sut.answered} samples in " \
           f"{time.time() - started:.1f} s"
    if not args.accuracy:
        line += f", LoadGen result {summary_result(summary)}"
    if args.accuracy:
        entries = accuracy_lib.read_accuracy_log(os.path.join(partial, "mlperf_log_accuracy.json"))
        result = workload.accuracy(entries)
        with open(os.path.join(partial, ACCURACY_FILE), "w") as f:
            f.write(result + "\n")
        line += f"; {result}"
    for name in (*LOG_FILES[1:], ACCURACY_FILE, *RUN_FILES, LOG_FILES[0]):   # the summary last
        if os.path.exists(os.path.join(partial, name)):
            os.replace(os.path.join(partial, name), os.path.join(output, name))
    shutil.rmtree(partial, ignore_errors=True)
    return line


def one_line(error: BaseException) -> str:
    """The error's type and first telling line (TF's start "Graph execution error:", then where, then what)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines
               if not line.startswith(("Graph execution error", "Detected at", "File ", "[[", "<stack traces"))]
    text = (telling or lines or [""])[0][:300]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tf-mlperf-infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", default=MODEL_NAME, choices=BENCHMARKS, help="resnet50 (default) or bert")
    parser.add_argument("--model", required=True, help="SavedModel folder written by tf-mlperf-export (resnet50) "
                        "or tf-mlperf-export-bert (bert)")
    parser.add_argument("--data_dir", help="resnet50: ImageNet TFRecords (validation-*-of-*) as written by "
                        "tf-mlperf-prep-imagenet")
    parser.add_argument("--squad_json", help="bert: the SQuAD v1.1 JSON to answer (dev-v1.1.json)")
    parser.add_argument("--vocab_file", help="bert: the uncased vocab.txt (default: the packaged MLPerf vocab)")
    parser.add_argument("--scenario", default="SingleStream", choices=SCENARIOS)
    parser.add_argument("--accuracy", action="store_true", help="accuracy mode (every sample once; writes "
                        "mlperf_log_accuracy.json and accuracy.txt); default: performance mode")
    parser.add_argument("--user_conf", help="LoadGen user.conf (target_qps, target_latency, min_duration, ...); "
                        "mlperf.conf is LoadGen's built-in one")
    parser.add_argument("--audit_conf", help="LoadGen audit.config of a compliance test (TEST01, ...)")
    parser.add_argument("--compliance", choices=COMPLIANCE_TESTS, help="run the compliance test (performance mode "
                        "with its audit.config, written beside the logs); tf-mlperf-infer-submission verifies it")
    parser.add_argument("--output", default="output", help="folder for LoadGen's logs")
    parser.add_argument("--overwrite", action="store_true", help="replace the logs of an earlier run in --output")
    parser.add_argument("--max_batchsize", type=int, default=32, help="largest batch the SUT runs (reference: 32)")
    parser.add_argument("--preprocessing", choices=PREPROCESSING, default="inference",
                        help="resnet50: inference: the inference reference's pre_process_vgg (OpenCV, INTER_AREA); "
                        "training: our training eval's (TF bilinear), to compare with the training eval")
    parser.add_argument("--count", type=int, default=0, help="resnet50: use the first N validation images (0: all)")
    parser.add_argument("--qps", type=float, help="Server/Offline target QPS, over the config (testing only)")
    parser.add_argument("--verbose", action="store_true", help="LoadGen's summary to stdout; tracebacks")
    args = parser.parse_args(argv)
    if args.max_batchsize < 1 or args.count < 0:
        parser.error("--max_batchsize must be >= 1 and --count >= 0")
    if args.compliance and (args.audit_conf or args.accuracy):
        parser.error("--compliance runs its own audit.config in performance mode: drop --audit_conf/--accuracy")
    return run_cli("tf-mlperf-infer", lambda: run(args), args.verbose,   # Ctrl-C outside the run (in it: Interrupts)
                   interrupted="tf-mlperf-infer: error: interrupted by SIGINT: no result written")


if __name__ == "__main__":
    sys.exit(main())
