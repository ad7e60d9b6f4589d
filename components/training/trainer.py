"""Train a sequential recommender on next-item prediction, with validation, early stopping and resumable
checkpoints.

The loop is deliberately plain (one optimizer, one loss, one validation per ``eval_every`` epochs).  What makes it
reproducible and resumable:
- every random draw comes from ``cfg.seed``: one numpy Generator (batch order, sampled negatives) and torch's global
  generator (dropout), seeded at the start and both saved in every checkpoint, so a resumed run draws exactly
  what an uninterrupted one would have;
- the checkpoint holds tensors and plain Python values only (torch.save, loaded with ``weights_only=True``), is
  written to a temporary file and moved into place with ``os.replace`` so a crash mid-write never leaves a torn
  file, and is reused only if its model and training configs match the current ones;
- the checkpoint names the runs that wrote it (MLflow, and ZenML through ``steps/_runs.py``): a resumption
  marks them FAILED if they still read "running", i.e. were killed (``components.tracking.runs``).

Models: any :class:`components.models.base.Recommender`.  The trainer calls its contract only: ``loss(batch,
kind)`` on a :class:`~components.models.base.Batch` (with sampled negatives for ``bce`` / ``bpr`` and, for a model
whose ``profile_table(data)`` returns one, the batch users' profile codes), ``max_len``, ``config.to_dict()``
(to match checkpoints), ``training_stages`` / ``set_stage`` (staged training, ``components.training.pretrain``).

The loop (:func:`train`) fits on a screen; each thing an epoch does is a function: ``_resume``, ``_train_epoch``
(``_batches`` and ``_step``), ``_validate``, ``_save``.

Data-parallel training (several processes, ``torch.distributed`` initialised by the caller, e.g. under
``torchrun``; see ``components.training.ddp``): each epoch the training users are permuted with a generator
seeded by (seed, epoch), the same on every rank, and rank r trains on ``perm[r::world]`` cut to the shortest
shard, so shards are disjoint and every rank runs the same number of steps; ``batch_size`` is per rank.
Gradients are averaged across ranks with one ``all_reduce`` of the flattened gradients after each backward,
instead of wrapping the model in ``DistributedDataParallel``: models with their own ``loss`` (END4Rec)
and staged training that freezes modules then need no special forward path or ``find_unused_parameters``, and
the weights stay identical on every rank because every rank applies the same averaged gradient.  Rank 0
evaluates and broadcasts the metrics, so model selection and early stopping agree everywhere; only rank 0
writes checkpoints and calls ``on_epoch_end``.  With one process nothing of this runs: single-process training
draws and computes exactly what it did before.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from components.data.sequences import SequenceDataset
from components.models.base import Batch, Recommender
from components.models.losses import LOSSES, NegativeProposal, sample_negatives
from components.training.batches import label_counts, training_batches, training_users
from components.training.evaluation import evaluate, history_excluded, resolve_device
from components.tracking import runs as run_records

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
#: TrainConfig fields that may change between a run and its resumption without changing what is computed.
_RESUME_FREE_FIELDS = ("epochs", "device", "num_threads", "progress", "valid_batch_size")


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0  # decoupled (AdamW); applied to matrices only, not to biases/LayerNorm gains
    loss: str = "ce"  # "ce": softmax over all items; "bce": one sampled negative per position (SASRec); "bpr";
    #   "sampled": softmax over the label and `sampled_negatives` items shared by the batch, logQ-corrected, with
    #   sparse item-table updates: its step cost does not grow with the catalogue (large catalogues)
    train_on: str = "target"  # labels: "target" behaviors only, or "all" events; inputs always hold every event
    patience: int | None = None  # stop after this many validations without improvement; None: never stop early
    valid_set: str | None = "valid"  # target set used for model selection; None: no validation, keep last epoch
    valid_metric: str = "sampled99_ndcg_at_10"  # key of evaluate()'s result; higher is better
    valid_batch_size: int = 256
    #: Protocols evaluated every epoch (the one of valid_metric is always included): both, so the per-epoch
    #: curves in MLflow show sampled and full-ranking metrics side by side.
    valid_protocols: tuple[str, ...] = ("sampled", "full")
    grad_clip: float | None = None  # max global grad norm
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1" ...
    amp: bool = True  # mixed precision, used only on CUDA (bf16 when supported, else fp16 with loss scaling)
    eval_every: int = 1
    max_steps_per_epoch: int | None = None
    num_threads: int | None = None  # torch intra-op threads on CPU (process-wide setting)
    progress: bool = True  # tqdm bar per epoch (auto-hidden when stderr is not a terminal)
    #: Batches of users with similar history lengths, each cut to the width its longest row needs
    #: (``training_batches(length_buckets=True)``): the same model outputs per row, far less padding computed;
    #: each step's loss is scaled by its share of labelled positions (``_labels_per_batch``).  Off by default:
    #: it changes the batches, hence the random draws and the numbers of a seeded run.
    length_buckets: bool = False
    #: loss "sampled": negatives shared by a batch, drawn (with replacement) from training label counts ** power
    #: (0: uniform; e.g. 0.75: popular items more often, the logQ correction keeps the estimate unbiased)
    sampled_negatives: int = 1024
    negative_power: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss={self.loss!r} must be one of {LOSSES}")
        if self.train_on not in ("target", "all"):
            problems.append(f"train_on={self.train_on!r} must be 'target' or 'all'")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_every < 1:
            problems.append("epochs must be >= 0, batch_size and eval_every >= 1")
        if self.sampled_negatives < 1 or self.negative_power < 0:
            problems.append(f"sampled_negatives={self.sampled_negatives} must be >= 1 and "
                            f"negative_power={self.negative_power} >= 0")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience={self.patience} must be >= 1 or None")
        if not re.match(r"(full|sampled\d+)_", self.valid_metric):
            problems.append(f"valid_metric={self.valid_metric!r} must start with 'sampled<m>_' or 'full_'")
        if problems:
            raise ValueError("TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainHooks:
    """Callbacks that observe a run without changing it (none draws random numbers or touches the model).

    ``on_epoch_start(epoch, users)``: on every rank, before the epoch, with the users this rank trains on in it.
    ``on_checkpoint(epoch, path)``: on the rank that writes checkpoints (rank 0), after each one is written.
    (``on_epoch_end``, rank 0 only, is ``train``'s own argument: it receives the epoch's record.)  Under guided
    training (``components.training.pretrain.train_guided``) epochs count within each stage."""

    on_epoch_start: Callable[[int, np.ndarray], None] | None = None
    on_checkpoint: Callable[[int, Path], None] | None = None


@dataclass
class TrainResult:
    history: list[dict]  # one record per epoch run so far (restored ones included): epoch, loss, seconds, metrics
    best_epoch: int  # 0 if no epoch ran
    best_metric: float | None  # validation metric at best_epoch (None without validation)
    best_state: dict[str, Tensor]  # CPU copy of the model's state dict at best_epoch; loaded into the model
    resumed: bool
    start_epoch: int  # first epoch this call trained (checkpoint epoch + 1 when resumed)
    stopped_early: bool = False
    metric_name: str | None = None
    extra: dict = field(default_factory=dict)


# ---- checkpoints -------------------------------------------------------------------------------------------------
def _resume_key(cfg: TrainConfig) -> dict:
    d = cfg.to_dict()
    for k in _RESUME_FREE_FIELDS:
        d.pop(k, None)
    if not d.get("length_buckets"):
        d.pop("length_buckets", None)  # off computes what runs before the option did: their checkpoints match
    return d


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _config_diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# ---- training ----------------------------------------------------------------------------------------------------
def sparse_table(model: nn.Module, cfg: TrainConfig) -> nn.Embedding | None:
    """The item table updated sparsely under ``cfg`` (the ``sampled`` loss on a model that offers one), else None."""
    if cfg.loss != "sampled" or not isinstance(model, Recommender):
        return None
    table = model.sparse_item_table()
    return table if table is not None and table.weight.requires_grad else None


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | "SparseTableAdam":
    """AdamW over the model's trainable parameters; under the ``sampled`` loss, with the model's item table
    (``sparse_item_table``) switched to sparse gradients and updated by lazy Adam (``SparseTableAdam``)."""
    table = sparse_table(model, cfg)
    sparse = [] if table is None else [table.weight]
    # Decay only matrices (embeddings, Linear weights): decaying biases and LayerNorm gains only hurts.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2 and not any(p is t for t in sparse)]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach: one multi-tensor kernel per update op instead of a Python loop over parameters; the same numbers,
    # bit for bit, as the loop (tests/models/test_trainer.py).  (fused=True is not: it rounds differently.)
    dense = torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)
    if table is None:
        return dense
    table.sparse = True
    return SparseTableAdam(dense, torch.optim.SparseAdam(sparse, lr=cfg.lr), type(model).__name__)


class SparseTableAdam:
    """Two optimizers stepped as one: AdamW for the dense parameters and ``torch.optim.SparseAdam`` for an item
    table with sparse gradients.  SparseAdam is lazy: it updates the rows a batch touched, and only their moments,
    so a step costs O(rows used x d) instead of O(catalogue x d) (an untouched row's moments do not decay, and the
    table gets no weight decay: the standard trade of sparse embedding training)."""

    def __init__(self, dense: torch.optim.Optimizer, sparse: torch.optim.SparseAdam, model_name: str):
        self.dense, self.sparse, self.model_name = dense, sparse, model_name

    @property
    def param_groups(self) -> list[dict]:
        return self.dense.param_groups + self.sparse.param_groups

    @property
    def state(self) -> dict:
        return {**self.dense.state, **self.sparse.state}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.dense.zero_grad(set_to_none=set_to_none)
        self.sparse.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None) -> None:
        for p in self.sparse.param_groups[0]["params"]:
            if p.grad is not None and not p.grad.is_sparse:
                raise RuntimeError(f"train: {self.model_name}'s item table got a dense gradient under the 'sampled' "
                                   "loss (something reads the whole table in training): return None from its "
                                   "sparse_item_table()")
        self.dense.step()
        self.sparse.step()

    def state_dict(self) -> dict:
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.dense.load_state_dict(state["dense"])
        self.sparse.load_state_dict(state["sparse"])


# ---- data parallelism -------------------------------------------------------------------------------------------
def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def epoch_shard(users: np.ndarray, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's training users for ``epoch``: a permutation seeded by (seed, epoch), identical on every rank,
    sliced ``rank::world`` and cut to ``len(users) // world`` (the shortest shard) so every rank runs the same
    number of steps; at most world - 1 users sit an epoch out, different ones each epoch."""
    perm = users[np.random.default_rng([seed, epoch]).permutation(len(users))]
    return perm[rank::world][:len(users) // world]


def _all_reduce_grads(model: nn.Module, contributes: bool) -> bool:
    """Average the gradients over the ranks that had a labelled batch (one collective for all of them); a rank
    without one contributes zeros, and so does a trainable parameter that got no gradient (every rank then holds a
    gradient for it, zero or not, and AdamW updates it alike everywhere).  Returns whether any rank contributed
    (otherwise every rank skips the step)."""
    params = [p for p in model.parameters() if p.requires_grad]
    ref = params[0]
    flat = torch.cat([(p.grad if p.grad is not None and contributes else torch.zeros_like(p)).reshape(-1).float()
                      for p in params] + [torch.ones(1, device=ref.device) if contributes
                                          else torch.zeros(1, device=ref.device)])
    dist.all_reduce(flat)
    count = float(flat[-1].item())
    if count == 0:
        return False
    flat = flat[:-1] / count
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n
    return True


def _broadcast_state(model: nn.Module) -> None:
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)



# ---- one run: its state, and the four things an epoch does ------------------------------------------------------
@dataclass
class _Run:
    """Everything one call of ``train`` holds; ``state`` is what a checkpoint saves and a resumption restores."""

    model: Recommender
    data: SequenceDataset
    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    rng: np.random.Generator
    users: np.ndarray  # the training users (before sharding)
    zero_shot: bool
    ckpt_path: Path | None
    #: length_buckets: labelled positions of an average batch of plain batching (see ``_labels_per_batch``)
    labels_per_batch: float | None = None
    #: loss "sampled": where each batch's shared negatives come from
    proposal: NegativeProposal | None = None
    state: dict = field(default_factory=lambda: {
        "epoch": 0, "best_metric": None, "best_epoch": 0, "best_state": None, "bad_evals": 0, "history": [],
        "stopped_early": False})

    @property
    def metric_key(self) -> str | None:
        return f"{self.cfg.valid_set}_{self.cfg.valid_metric}" if self.cfg.valid_set else None


def _start(model: Recommender, data: SequenceDataset, cfg: TrainConfig, checkpoint_dir: Path | None,
           users: np.ndarray | None, zero_shot: bool) -> _Run:
    """Check the inputs, place the model, build the optimizer and seed every generator."""
    if not isinstance(model, Recommender):
        raise TypeError(f"train: {type(model).__name__} is not a components.models.base.Recommender")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    rank, world = dist_rank_world()
    device = resolve_device(cfg.device)
    if world > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per process (torchrun)
        torch.cuda.set_device(device)
    model.to(device)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    # Loss scaling is only needed for fp16, whose small exponent range underflows gradients; bf16 has fp32's range.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    if sparse_table(model, cfg) is not None and (cfg.grad_clip is not None or world > 1):
        raise ValueError("train: the 'sampled' loss updates the item table sparsely, which supports neither "
                         "grad_clip nor several ranks; unset grad_clip / train on one process")
    optimizer = build_optimizer(model, cfg)
    n_items = int(model.config.to_dict().get("n_items", data.n_items))
    if n_items != data.n_items:
        raise ValueError(f"train: model has n_items={n_items}, dataset has n_items={data.n_items}")
    train_users = training_users(data, data.warm_users if users is None else users, zero_shot)
    if len(train_users) == 0:
        raise ValueError("train: no user has at least two events in its training prefix (offsets[u]:train_end[u])")
    if len(train_users) // world == 0:
        raise ValueError(f"train: {len(train_users)} training users cannot be sharded over {world} ranks")
    if cfg.valid_set is not None and cfg.valid_set not in data.targets:
        raise KeyError(f"train: valid_set {cfg.valid_set!r} not in dataset targets {sorted(data.targets)}")
    # With several ranks each draws its own negatives and dropout masks (the shards come from epoch_shard).
    rng = np.random.default_rng(cfg.seed if world == 1 else [cfg.seed, rank])
    torch.manual_seed(cfg.seed if world == 1 else cfg.seed + 7919 * rank)  # dropout: torch's global generator
    proposal = None
    if cfg.loss == "sampled":
        counts = label_counts(data, train_users, cfg.train_on) if cfg.negative_power else None
        proposal = NegativeProposal(data.n_items, cfg.sampled_negatives, counts, cfg.negative_power)
    return _Run(model, data, cfg, device, rank, world, optimizer, scaler, use_amp, amp_dtype, rng,
                train_users, zero_shot, Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None,
                _labels_per_batch(data, train_users, model.max_len, cfg, world, zero_shot)
                if cfg.length_buckets else None, proposal)


def _labels_per_batch(data: SequenceDataset, users: np.ndarray, max_len: int, cfg: TrainConfig, world: int,
                      zero_shot: bool) -> float:
    """Labelled positions per batch of an epoch, on average (the same with or without length buckets: they regroup
    the rows, not the labels).  Length-bucketed batches hold very different numbers of labelled positions (short
    histories together, long ones together); a step's loss, a mean over its positions, is scaled by its count over
    this average, so every labelled position weighs in an epoch what it weighs under plain batching (otherwise the
    positions of short histories would count several times more, and the model learns measurably slower per
    epoch).  One pass of numpy batch building with a generator of its own (the run's draws are untouched)."""
    labels = sum(int(mask.sum()) for *_, mask in training_batches(
        data, users, max_len, 4096, np.random.default_rng(0), cfg.train_on, zero_shot=zero_shot))
    steps = math.ceil(len(users) // world / cfg.batch_size)
    return max(labels / world / max(steps, 1), 1.0)


def _resume(run: _Run) -> bool:
    """Restore a matching checkpoint (model, optimizer, generators, run state); True if one was restored.  With
    several ranks, every rank then starts from rank 0's weights and epoch."""
    resumed = False
    ckpt = load_checkpoint(run.ckpt_path) if run.ckpt_path is not None else None
    if ckpt is not None:
        diff = _config_diff(ckpt.get("model_config", {}), run.model.config.to_dict()) + \
            _config_diff(ckpt.get("train_key", {}), _resume_key(run.cfg))
        if ckpt.get("format") != CHECKPOINT_FORMAT or diff:
            logger.warning("checkpoint %s does not match this run (differs in %s); starting fresh",
                           run.ckpt_path, diff or "format")
        else:
            run.model.load_state_dict(ckpt["model"])
            run.optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                run.scaler.load_state_dict(ckpt["scaler"])
            run.rng.bit_generator.state = ckpt["numpy_rng"]
            torch.set_rng_state(ckpt["torch_rng"])
            if run.device.type == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], run.device)
            for k in run.state:
                run.state[k] = ckpt[k]
            resumed = True
            logger.info("resuming from %s after epoch %d", run.ckpt_path, run.state["epoch"])
            if run.rank == 0:  # the runs that wrote it were killed: close them if they still read "running"
                run_records.close_replaced(ckpt.get("writer"))
    if run.world > 1:
        # Every rank must start from rank 0's weights and epoch: a rank that did not see rank 0's checkpoint
        # (a checkpoint_dir that is not shared between nodes) would otherwise run a different number of steps.
        starts = [None] * run.world
        dist.all_gather_object(starts, run.state["epoch"] + 1)
        if len(set(starts)) != 1:
            raise RuntimeError(f"train: ranks would resume from different epochs {starts}; checkpoint_dir must be "
                               "shared by every rank (or absent)")
        _broadcast_state(run.model)
    return resumed


def _batches(run: _Run, shard: np.ndarray, profile_rows: np.ndarray | None, steps: int) -> Iterator[Batch]:
    """The first ``steps`` batches of ``shard``, with sampled negatives (losses other than ce) and profile codes.
    Negatives are drawn for every batch, labelled or not, so the generator advances alike on every rank."""
    cfg, data = run.cfg, run.data
    # Sampled training negatives follow the split's history_items setting: history items are negatives only where
    # they are candidates at evaluation.
    avoid_history = history_excluded(data)
    for step, (items, behaviors, labels, mask, *batch_users) in enumerate(training_batches(
            data, shard, run.model.max_len, cfg.batch_size, run.rng, cfg.train_on,
            with_users=profile_rows is not None, zero_shot=run.zero_shot, length_buckets=cfg.length_buckets)):
        if step >= steps:
            break
        profiles = torch.from_numpy(profile_rows[batch_users[0].numpy()]) if profile_rows is not None else None
        negatives = None
        if run.proposal is not None:
            negatives = run.proposal.draw(run.rng)
        elif cfg.loss != "ce":
            avoid = torch.cat([items, labels], 1).numpy() if avoid_history else None
            negatives = torch.from_numpy(sample_negatives(labels.numpy(), data.n_items, run.rng, avoid))
        yield Batch(items, behaviors, labels, mask, negatives, profiles)


def _step(run: _Run, batch: Batch) -> float | None:
    """One optimizer step on ``batch``; its loss, or None if no rank's batch had a labelled position."""
    labelled = bool(batch.mask.any())
    if not labelled and run.world == 1:
        return None  # no labelled position in this batch (possible with sparse target behaviors)
    run.optimizer.zero_grad(set_to_none=True)
    loss = None
    if labelled:
        with torch.autocast(device_type=run.device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            loss = run.model.loss(batch.to(run.device), run.cfg.loss)
        weighted = loss if run.labels_per_batch is None else loss * (int(batch.mask.sum()) / run.labels_per_batch)
        run.scaler.scale(weighted).backward()
    # Every rank joins every step's collective, labelled batch or not (the others would hang), and applies the
    # same averaged gradient, so the weights stay equal on all ranks.
    if run.world > 1 and not _all_reduce_grads(run.model, labelled):
        return None  # no rank had a labelled position: every rank skips this step
    if run.cfg.grad_clip is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    # .item() waits for the device; once per step is cheap next to the step itself and gives a live loss.
    return None if loss is None else float(loss.item())


def _train_epoch(run: _Run, epoch: int, profile_rows: np.ndarray | None, hooks: TrainHooks) -> dict:
    """Train one epoch on this rank's shard; the epoch's record (loss over every rank's batches, steps, time)."""
    cfg = run.cfg
    run.model.train()
    t0 = time.perf_counter()
    shard = run.users if run.world == 1 else epoch_shard(run.users, cfg.seed, epoch, run.rank, run.world)
    if hooks.on_epoch_start is not None:
        hooks.on_epoch_start(epoch, shard)
    steps = math.ceil(len(run.users) // run.world / cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    loss_sum, n_steps = 0.0, 0
    bar = tqdm(_batches(run, shard, profile_rows, steps), total=steps, desc=f"epoch {epoch}/{cfg.epochs}",
               leave=False, disable=None if cfg.progress and run.rank == 0 else True)
    for batch in bar:
        loss = _step(run, batch)
        if loss is not None:
            loss_sum, n_steps = loss_sum + loss, n_steps + 1
            bar.set_postfix(loss=f"{loss:.4f}")
    bar.close()
    n_loss_steps = n_steps
    if run.world > 1:  # the epoch's loss over every rank's batches
        totals = torch.tensor([loss_sum, float(n_steps)], dtype=torch.float64, device=run.device)
        dist.all_reduce(totals)
        loss_sum, n_loss_steps = float(totals[0]), int(totals[1])
    return {"epoch": epoch, "loss": loss_sum / max(n_loss_steps, 1), "steps": n_steps,
            "seconds": time.perf_counter() - t0}


def _validate(run: _Run, epoch: int, record: dict) -> None:
    """Evaluate on the validation set (rank 0; the others receive its metrics), add the metrics to ``record``,
    keep the best epoch's weights and decide early stopping."""
    cfg, st = run.cfg, run.state
    t1 = time.perf_counter()
    protocol = "full" if cfg.valid_metric.startswith("full_") else "sampled"
    metrics = None
    if run.rank == 0:  # the weights are the same on every rank: rank 0 evaluates, the others receive its metrics
        protocols = tuple(dict.fromkeys((protocol, *cfg.valid_protocols)))
        metrics = evaluate(run.model, run.data, cfg.valid_set, protocols=protocols, batch_size=cfg.valid_batch_size,
                           device=run.device)
    if run.world > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    if cfg.valid_metric not in metrics:
        raise KeyError(f"train: valid_metric {cfg.valid_metric!r} not among the metrics of {cfg.valid_set!r}: "
                       f"{sorted(metrics)}")
    record.update({f"{cfg.valid_set}_{k}": v for k, v in metrics.items()})
    record["eval_seconds"] = time.perf_counter() - t1
    value = float(metrics[cfg.valid_metric])
    if st["best_metric"] is None or value > st["best_metric"]:
        st.update(best_metric=value, best_epoch=epoch, best_state=_cpu_state(run.model), bad_evals=0)
        return
    st["bad_evals"] += 1
    if cfg.patience is not None and st["bad_evals"] >= cfg.patience:
        st["stopped_early"] = True
        logger.info("early stop after epoch %d: %s has not improved for %d validations (best %.4f at epoch %d)",
                    epoch, run.metric_key, st["bad_evals"], st["best_metric"], st["best_epoch"])


def _save(run: _Run, epoch: int, hooks: TrainHooks) -> None:
    """Write the checkpoint of this epoch (rank 0)."""
    save_checkpoint(run.ckpt_path, {
        "format": CHECKPOINT_FORMAT, "model_config": run.model.config.to_dict(), "train_key": _resume_key(run.cfg),
        "train_config": run.cfg.to_dict(), "model": _cpu_state(run.model), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler.is_enabled() else None,
        "numpy_rng": run.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None, **run.state,
        "writer": run_records.writer_record(),  # the MLflow / ZenML runs writing it (closed if a resume finds them)
    })
    if hooks.on_checkpoint is not None:
        hooks.on_checkpoint(epoch, run.ckpt_path)


# ---- the loop ----------------------------------------------------------------------------------------------------
def train(
    model: Recommender,
    data: SequenceDataset,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    users: np.ndarray | None = None,
    zero_shot_examples: bool = False,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train ``model`` on the training prefixes of ``users`` (default: the warm users).

    Validation (every ``eval_every`` epochs and after the last) picks the best epoch by ``cfg.valid_metric`` on
    ``cfg.valid_set``; at the end the best weights are loaded back into ``model``.  With ``checkpoint_dir`` a
    checkpoint is written after every epoch and a matching one found there is resumed from.
    ``on_epoch_end(epoch, record)`` receives each epoch's record (e.g. to log it to MLflow).
    ``zero_shot_examples`` (prompt tuning) adds each user's zero-shot example to its row (``training_batches``).
    ``hooks`` (:class:`TrainHooks`) observe each rank's shard and the checkpoint writes.
    """
    hooks = hooks or TrainHooks()
    run = _start(model, data, cfg, checkpoint_dir, users, zero_shot_examples)
    st = run.state
    resumed = _resume(run)
    start_epoch = st["epoch"] + 1
    profile_rows = model.profile_table(data)  # models that read user profiles get each batch user's codes
    for epoch in range(start_epoch, cfg.epochs + 1):
        if st["stopped_early"]:
            break
        record = _train_epoch(run, epoch, profile_rows, hooks)
        if cfg.valid_set is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            _validate(run, epoch, record)
        elif cfg.valid_set is None:
            st.update(best_epoch=epoch, best_state=_cpu_state(model))
        st["epoch"] = epoch
        st["history"].append(record)
        key = run.metric_key
        logger.info("epoch %d: loss %.4f, %d steps, %.1f s%s", epoch, record["loss"], record["steps"],
                    record["seconds"], f", {key} {record[key]:.4f}" if key and key in record else "")
        if run.ckpt_path is not None and run.rank == 0:
            _save(run, epoch, hooks)
        if on_epoch_end is not None and run.rank == 0:
            on_epoch_end(epoch, copy.deepcopy(record))

    if st["best_state"] is None:  # no epoch ran (epochs=0) or validation never happened
        st.update(best_state=_cpu_state(model), best_epoch=st["epoch"])
    model.load_state_dict(st["best_state"])
    return TrainResult(history=st["history"], best_epoch=st["best_epoch"], best_metric=st["best_metric"],
                       best_state=st["best_state"], resumed=resumed, start_epoch=start_epoch,
                       stopped_early=st["stopped_early"], metric_name=run.metric_key)
