#!/bin/bash
# {{RUNS}} runs of {{BENCHMARK}}; a failed run does not stop the campaign. Written by tf-mlperf-campaign --dry_run
# from tf_mlperf/launch/templates/run_local.sh.
set -u
FAILED=0
{{EXPORTS}}
{{RUN_BLOCKS}}
[ "$FAILED" = 0 ]
