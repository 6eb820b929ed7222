
# run {{K}}, seed {{SEED}}
MLLOG={{LOG}}
# finished: the trainer's marker, or a run_stop that is the run's own end (one written when an error stopped
# the run carries "error" in its metadata: that run resumes)
if [ -e {{RUN_DIR}}/run_finished.json ] || grep -hs '"key": "run_stop"' "$MLLOG" {{RUN_DIR}}/resumed-*.txt | grep -qv '"error": '; then
  echo "run {{K}}: finished in an earlier job ({{RUN_DIR}}/run_finished.json, or run_stop in $MLLOG or {{RUN_DIR}}/resumed-*.txt): skipped"
elif [ ! -e "$MLLOG" ] && [ -d {{RUN_DIR}}/checkpoints ]; then
  echo "run {{K}}: {{RUN_DIR}} holds checkpoints but $MLLOG is missing: a resumed run would log as a whole one; move {{RUN_DIR}} away for a fresh run {{K}}" >&2; FAILED=$((FAILED + 1))
else
  if [ -e "$MLLOG" ]; then
    MLLOG={{RUN_DIR}}/resumed-$SLURM_JOB_ID.txt; mkdir -p {{RUN_DIR}}
    echo "run {{K}} was interrupted in an earlier job: it resumes from {{RUN_DIR}}/checkpoints and logs to $MLLOG; {{LOG_NAME}} keeps the interrupted attempt and counts as a failed run (the MLPerf clock may not be paused; docs/cluster.md)" >&2
  fi
{{PRE_RUN}}
{{LAUNCH}} || { echo "run {{K}} failed with exit code $?" >&2; FAILED=$((FAILED + 1)); }
fi
