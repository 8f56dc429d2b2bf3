"""Fabricated studies for the table and report tests: run summaries as a finished run records them, in a
store whose metadata is what `gatedrnn reproduce` writes — no training, so every number is known by hand."""
from __future__ import annotations

from gatedrnn.study.store import Store, new_owner

DIV, FAIL = "diverged", "failed"


def summary(run_id: str, status: str, test: float | None = None, hidden_size: int = 46) -> dict:
    """A run's summary; a finished run's train/valid NLL sit 0.5/0.25 below its test NLL."""
    s = {"run_id": run_id, "status": status, "epochs": 3, "best_epoch": 2, "train_seconds": 1.0,
         "hidden_size": hidden_size,
         "history": [{"epoch": 0, "seconds": 0.0, "train_nll": 10.0, "valid_nll": 10.0}],
         "data_files": {}, "environment": {}}
    if status == FAIL:
        s.update(error="RuntimeError: fabricated failure", history=[])
    else:
        s.update(train_nll=test - 0.5, valid_nll=test - 0.25, test_nll=test, kind="music")  # as runs record it
    return s


class FabricatedStore(Store):
    """A study's store with its metadata set; `put` records a run as claimed and finished."""

    def __init__(self, out, study, grid, datasets: list[str]):
        super().__init__(out)
        self.owner = new_owner()
        self.set_meta("study", study.model_dump())
        self.set_meta("datasets", datasets)
        self.set_meta("notes", [])
        self.set_meta("lr_candidates", grid.lrs)

    def put(self, spec, run_summary: dict) -> None:
        assert self.claim(spec.to_dict(), self.owner) == "claimed"
        self.finish(run_summary)
