"""Launching a campaign: the machine (topology), the launcher commands, the scripts (templates/), the run
loop (campaign) and the process guard that ends a run with its driver. Scores nothing: that is tf_mlperf.score."""
