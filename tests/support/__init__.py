"""What the tests share and are not tests themselves: launching real jobs and reading what they leave (launch),
the session's shared data (data_fixtures), the cluster services (cluster_fixtures), compliant MLLOG logs
(mllog_fixtures), the reference BERT shapes (bert_reference), and the small trainers and Horovod workers the
tests start as real processes by path (toy_task, dist_worker, hvd_*_worker: `python tests/support/<name>.py`).

The tests import them as `support.<name>` (pytest puts tests/ on sys.path; so does tests/bazel_pytest.py)."""
