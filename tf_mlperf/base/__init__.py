"""The lowest layer: what the trainers, the data-prep jobs, inference, launch and score share (the one error
type and CLI wrapper, the MLLOG reader, the record formats, the MLPerf facts). It imports nothing else of
the project (docs/architecture.md)."""
