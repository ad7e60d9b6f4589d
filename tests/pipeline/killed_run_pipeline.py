"""A tiny training pipeline (fingerprint_input -> a small chain dataset -> the real pretrain step) that
tests/pipeline/test_killed_run.py runs in child processes: once killed with SIGKILL right after the first epoch's
checkpoint is written, once again to resume from it.

    python -c "...; from pipeline.killed_run_pipeline import main; main()" RAW_PATH [--kill-after-checkpoint]

(with ``tests`` on sys.path, the module name pytest gives it: both runs must load the steps from the same source,
or ZenML's cache would not serve the data step to the second run, and its checkpoint folder would differ).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Annotated

from zenml import pipeline, step

from components.data.sequences import SequenceDataset
from steps import fingerprint_input, pretrain

logger = logging.getLogger(__name__)

MODEL = {"name": "sasrec", "max_len": 20, "hidden": 16, "n_layers": 1, "n_heads": 1}
#: Three epochs: the killed run writes epoch 1's checkpoint, the resumed run trains epochs 2 and 3.
TRAINING = {"epochs": 3, "batch_size": 32, "lr": 0.001, "loss": "ce", "progress": False, "device": "cpu",
            "num_threads": 1, "valid_protocols": ["sampled"], "valid_metric": "sampled20_ndcg_at_10"}


@step
def chain_sequences(input_fingerprint: str) -> Annotated[SequenceDataset, "sequences"]:
    """A small seeded chain-walk split (tests/models/synthetic.py), cached like any data step."""
    from models.synthetic import make_chain_dataset

    return make_chain_dataset(n_warm=61, n_cold_tune=5, n_cold_test=5, n_items=83, warm_len=(8, 20), n_negatives=20,
                              seed=3)


@pipeline(enable_cache=True)
def killed_run_pipeline(raw_path: str) -> None:
    sequences = chain_sequences(fingerprint_input(raw_path))
    pretrain(sequences, seed=7, model=MODEL, training=TRAINING)


def _die_after_first_checkpoint() -> None:
    """The fault: SIGKILL this process right after the trainer has written (and moved into place) a checkpoint,
    as a lost node or the OOM killer would: nothing gets to close the ZenML or MLflow runs."""
    import components.training.trainer as trainer

    write = trainer.save_checkpoint

    def save_then_die(path, payload):
        write(path, payload)
        logger.warning("killing pid %d after writing %s (epoch %s)", os.getpid(), path, payload.get("epoch"))
        os.kill(os.getpid(), signal.SIGKILL)

    trainer.save_checkpoint = save_then_die


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("raw_path")
    p.add_argument("--kill-after-checkpoint", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    if args.kill_after_checkpoint:
        _die_after_first_checkpoint()
    killed_run_pipeline.with_options(run_name="killed-run-{date}-{time}")(raw_path=args.raw_path)
