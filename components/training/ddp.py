"""Data-parallel pre-training outside the pipeline: one process per GPU (or CPU process), launched by torchrun.

    torchrun --standalone --nproc-per-node 4 -m components.training.ddp --config configs/ml1m.k8s.yaml \\
        [--raw-path PATH] [--out DIR] [--checkpoint-dir DIR] [--record-shards]

Every rank builds the data exactly as the pipeline's steps do with the config's parameters
(``components.data.prepare.sequences_from_config``: ingest -> validate -> clean -> split, the functions the data
steps call; deterministic, so all ranks hold the same SequenceDataset), then pre-trains with the config's
``steps.pretrain.parameters`` (model and training) through ``pretrain_model``; ``components.training.trainer``
shards the training users over the ranks, averages gradients, and lets rank 0 alone evaluate, checkpoint and
call the epoch callback.  Rank 0 then writes the trained model to ``--out`` in the format of the pipeline's model
artifact (``weights.safetensors`` + ``model.json``, see materializers/model.py) and, only when
``MLFLOW_TRACKING_URI`` is set, logs the run (params, per-epoch metrics under ``epoch/``, the model files) to
MLflow.  ``batch_size`` is per rank: the global batch is ``world_size`` times it.

The process group's backend is NCCL when CUDA is available (each rank on the GPU of its ``LOCAL_RANK``), gloo
otherwise.  Without torchrun (no ``WORLD_SIZE`` in the environment) it runs as a single process.
``--record-shards`` writes, per rank, ``shards/rank{r}.json`` under ``--out``: the users the trainer built each
epoch's batches from, and how many checkpoints and epoch logs that rank wrote (a debug artifact for tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from components.training.trainer import TrainHooks

logger = logging.getLogger("components.training.ddp")


def init_distributed() -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (WORLD_SIZE set); (rank, world size)."""
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


class _ShardRecorder:
    """What this rank did (--record-shards), observed through the trainer's hooks: the users of each epoch, the
    checkpoints it wrote and the epochs it logged."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []
        self.checkpoints = 0
        self.epoch_logs = 0

    def hooks(self) -> TrainHooks:
        from components.training.trainer import TrainHooks

        def epoch_start(epoch: int, users) -> None:
            self.epochs.append(sorted(int(u) for u in users))

        def checkpoint(epoch: int, path: Path) -> None:
            self.checkpoints += 1

        return TrainHooks(on_epoch_start=epoch_start, on_checkpoint=checkpoint)

    def write(self, path: Path, rank: int, world: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rank": rank, "world_size": world, "epochs": self.epochs,
                                    "checkpoints_written": self.checkpoints, "epoch_logs": self.epoch_logs}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="pipeline config YAML (its data and pretrain parameters)")
    p.add_argument("--raw-path", help="replaces the config's parameters.raw_path")
    p.add_argument("--out", default="outputs/ddp", help="folder for the trained model (rank 0 writes it)")
    p.add_argument("--checkpoint-dir", help="resumable checkpoints (rank 0 writes; must be shared by all ranks)")
    p.add_argument("--seed", type=int, help="replaces the config's parameters.seed")
    p.add_argument("--record-shards", action="store_true", help="write each rank's users to OUT/shards/")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(name)s] %(message)s")

    import torch.distributed as dist

    from components.data.prepare import sequences_from_config, step_parameters
    from components.training.pretrain import pretrain_model

    rank, world = init_distributed()
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    out = Path(a.out)
    config = yaml.safe_load(Path(a.config).read_text())
    seed = a.seed if a.seed is not None else int(config["parameters"].get("seed", 42))
    recorder = _ShardRecorder() if a.record_shards else None
    try:
        data = sequences_from_config(config, raw_path=a.raw_path, seed=seed)
        pretrain = step_parameters(config, "pretrain")
        model_settings = pretrain.get("model") or {}
        train_settings = {**(pretrain.get("training") or {}), "progress": rank == 0}
        logger.info("rank %d of %d: %d warm users, %d items", rank, world, len(data.warm_users), data.n_items)

        mlflow = None
        if rank == 0 and os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            from components.tracking import mlflow_log

            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "mbprompt-ddp-pretrain"))
            mlflow.start_run(run_name=f"{Path(a.config).stem}-ddp{world}")
            mlflow_log.log_params({"model": model_settings, "training": train_settings, "seed": seed,
                                   "config": a.config, "world_size": world})

        def log_epoch(epoch: int, record: dict) -> None:  # the trainer calls it on rank 0 only
            if recorder is not None:
                recorder.epoch_logs += 1
            if mlflow is not None:
                mlflow_log.log_metrics(record, step=epoch, prefix="epoch/")

        trained = pretrain_model(data, model_settings, train_settings, seed=seed, on_epoch_end=log_epoch,
                                 hooks=recorder.hooks() if recorder is not None else None,
                                 checkpoint_root=Path(a.checkpoint_dir) if a.checkpoint_dir else None,
                                 data_key=f"{a.config}:{a.raw_path or config['parameters'].get('raw_path')}")
        trained.info["world_size"] = world
        if rank == 0:
            trained.save(out)
            logger.info("saved the trained model (best epoch %d, %s %s) to %s", trained.best_epoch,
                        trained.best_metric.get("name"), trained.best_metric.get("value"), out)
            if mlflow is not None:
                mlflow_log.log_metrics({"n_parameters": trained.info["n_parameters"],
                                        "pretrain_seconds": trained.info["wall_seconds"]})
                mlflow.log_artifacts(str(out), artifact_path="model")
                mlflow.end_run()
        if recorder is not None:
            recorder.write(out / "shards" / f"rank{rank}.json", rank, world)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
