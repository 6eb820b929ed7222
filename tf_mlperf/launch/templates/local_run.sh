{{PRE_RUN}}
{{COMMAND}} || { echo "run {{K}} failed with exit code $?" >&2; FAILED=$((FAILED + 1)); }
