"""The frozen model and its prompt bank, compiled per shape, run on a thread.

Every served task's prompt `[p, e]` is a slot of one bank `[capacity, p, e]`
(`analysis.bank`); a batch row picks its task's slot with `prompt_index`, so
rows of different tasks share one forward pass. The capacity is the number
of prompts rounded up to a power of two, and a removed prompt frees its
slot: adding a prompt recompiles only when the bank must grow.

Shapes are fixed per compiled program: `batch_size` rows (padded; with
`batch_buckets`, to the next of the data-axis multiples doubling up to
`batch_size`, so that a lone request pays for a small batch), the encoder
cut to a length bucket (`training.length_buckets`), the decoder at the
targets feature length. So there is one compilation per

  (mode, bank capacity, input bucket, batch bucket)
                                          mode: greedy, beam k, rank c

and `warm` compiles greedy (and rank, when a served task has labels) for
every bucket before the server accepts requests.
"""

import dataclasses
import threading
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np

from prompt_tuning import partitioning
from prompt_tuning.analysis import bank as bank_lib
from prompt_tuning.analysis import prompt_io
from prompt_tuning.models.model import EncoderDecoderModel
from prompt_tuning.training import choice_scoring
from prompt_tuning.training import data
from prompt_tuning.training import length_buckets as buckets_lib
from prompt_tuning.training import partitioned

Params = Any
GREEDY, BEAM, RANK = "greedy", "beam", "rank"


def capacity_for(num_prompts: int) -> int:
  """Bank slots for `num_prompts` prompts: the next power of two."""
  return 1 << max(num_prompts - 1, 0).bit_length()


@dataclasses.dataclass(frozen=True)
class Bank:
  """An immutable snapshot of the bank (swapped whole on every change).

  Attributes:
    slots: `{task: slot}`.
    prompts: `{task: prompt [p, e]}`.
    capacity: slots of the compiled bank model.
    model: the bank model (`bank.bank_model`, `capacity` prompts).
    params: its parameters on the mesh (`prompt/prompt` `[capacity, p, e]`).
  """
  slots: Mapping[str, int]
  prompts: Mapping[str, np.ndarray]
  capacity: int
  model: EncoderDecoderModel
  params: Params


class Engine:
  """Runs batches of encoded rows through the frozen model with a bank.

  Attributes:
    feature_lengths: `{'inputs': l, 'targets': t}`.
    batch_size: rows per forward pass (a multiple of the mesh's data axis).
    buckets: the encoder lengths a batch is cut to (`length_buckets`).
    compilations: programs compiled so far.
  """

  def __init__(self, model: EncoderDecoderModel, base_params: Params,
               feature_lengths: Mapping[str, int], batch_size: int,
               mesh: Optional[jax.sharding.Mesh] = None,
               length_buckets: buckets_lib.Spec = buckets_lib.DEFAULT_SPEC,
               alpha: float = 0.6, min_capacity: int = 1,
               batch_buckets: bool = False,
               on_compile: Optional[Callable[[tuple[Any, ...]], None]] = None):
    """Args:
      model: the prompt model (`prompts/prompt.gin`); its prompt is replaced.
      base_params: the frozen parameters (host arrays).
      feature_lengths: TASK_FEATURE_LENGTHS.
      batch_size: rows per pass.
      mesh: default `partitioning.create_mesh()`.
      length_buckets: a bucket spec; None: inputs always at full length.
      alpha: beam search's brevity-penalty exponent.
      min_capacity: bank slots to reserve (rounded up to a power of two),
        so that prompts can be added up to it without a compilation.
      batch_buckets: pad each batch to the smallest of the doubling batch
        sizes that holds it (more programs), not always to `batch_size`.
      on_compile: called with each new compilation's key.
    """
    self._model = model
    self._base = base_params
    self.feature_lengths = dict(feature_lengths)
    self.batch_size = batch_size
    self.mesh = mesh or partitioning.create_mesh()
    shards = self.mesh.shape[partitioning.MESH_AXES[0]]
    if batch_size % shards:
      raise ValueError(f"batch_size {batch_size} must be a multiple of the "
                       f"mesh's data axis ({shards} devices).")
    buckets = buckets_lib.LengthBuckets.from_spec(length_buckets,
                                                  self.feature_lengths)
    self.buckets = (buckets.inputs if buckets else
                    (self.feature_lengths["inputs"],))
    self.alpha = alpha
    sizes = [batch_size]
    while batch_buckets and sizes[0] % 2 == 0 and (
        sizes[0] // 2) % shards == 0:
      sizes.insert(0, sizes[0] // 2)
    self.batch_sizes = tuple(sizes)
    self.min_capacity = capacity_for(min_capacity)
    self.compilations = 0
    self.on_compile = on_compile
    self._seen: set[tuple[Any, ...]] = set()
    self._fns: dict[tuple[Any, ...], Callable[..., Any]] = {}
    self._lock = threading.Lock()  # Bank changes, one at a time.
    self.bank: Optional[Bank] = None
    # Labels per rank row warmed with greedy decoding (None: no rank); the
    # server sets it from the served tasks' label sets.
    self.warm_choices: Optional[int] = None

  @property
  def embed_dim(self) -> int:
    return self._model.module.config.emb_dim

  # The bank.

  def check_prompt(self, prompt: np.ndarray, source: str) -> np.ndarray:
    """`prompt` as float32 `[p, e]` if it fits the model and the bank;
    `prompt_io.PromptShapeError` naming `source` if not."""
    prompt = np.asarray(prompt, np.float32)
    if prompt.ndim != 2:
      raise prompt_io.PromptShapeError(
          f"{source} has shape {list(prompt.shape)}; a served prompt is one "
          "[length, embed] array (give each prompt of a bank its own task).")
    prompt_io.check_portable(prompt, self.embed_dim, source=source)
    if self.bank is not None and self.bank.prompts:
      length = next(iter(self.bank.prompts.values())).shape[0]
      if prompt.shape[0] != length:
        raise prompt_io.PromptShapeError(
            f"{source} has {prompt.shape[0]} positions (shape "
            f"{list(prompt.shape)}) but the served prompts have {length}: "
            "one bank holds prompts of one length.")
    return prompt

  def set_prompts(self, prompts: Mapping[str, np.ndarray]) -> Bank:
    """Adds (or replaces) prompts; returns the new bank, warmed if it grew.

    The old bank keeps serving until the new one is swapped in.
    """
    with self._lock:
      old = self.bank
      slots = dict(old.slots) if old else {}
      stored = dict(old.prompts) if old else {}
      for task, prompt in prompts.items():
        prompt = self.check_prompt(prompt, f"the prompt of {task}")
        if task not in slots:
          taken = set(slots.values())
          slots[task] = next(i for i in range(len(slots) + 1)
                             if i not in taken)
        stored[task] = prompt
      new = self._build(slots, stored)
      if old is None or new.capacity != old.capacity:
        self.warm(new)
      self.bank = new
      return new

  def remove_prompt(self, task: str) -> Bank:
    """Frees `task`'s slot (the capacity, and so the programs, stay)."""
    with self._lock:
      old = self.bank
      if old is None or task not in old.slots:
        raise KeyError(task)
      slots = {k: v for k, v in old.slots.items() if k != task}
      prompts = {k: v for k, v in old.prompts.items() if k != task}
      self.bank = self._build(slots, prompts, old.capacity)
      return self.bank

  def _build(self, slots: Mapping[str, int],
             prompts: Mapping[str, np.ndarray],
             capacity: Optional[int] = None) -> Bank:
    if not prompts:
      raise ValueError("The bank needs at least one prompt.")
    length, width = next(iter(prompts.values())).shape
    capacity = max(capacity or 0, self.min_capacity,
                   capacity_for(max(slots.values()) + 1))
    stacked = np.zeros((capacity, length, width), np.float32)
    for task, slot in slots.items():
      stacked[slot] = prompts[task]
    model = bank_lib.bank_model(self._model, capacity, prompt_length=length)
    shardings = partitioning.param_shardings(model.init_shapes()["params"],
                                             self.mesh)
    params = jax.device_put(bank_lib.with_prompt(self._base, stacked),
                            shardings)
    return Bank(dict(slots), dict(prompts), capacity, model, params)

  # Running batches.

  def bucket(self, longest: int) -> int:
    """The encoder length of a batch whose longest row has `longest` ids."""
    return next(b for b in self.buckets if b >= longest)

  def rank_examples(self, num_choices: int) -> int:
    """Examples per rank batch (each takes `num_choices` decoder rows)."""
    shards = self.mesh.shape[partitioning.MESH_AXES[0]]
    return choice_scoring.examples_per_batch(self.batch_size, num_choices,
                                             shards)

  def decode(self, bank: Bank, rows: list[np.ndarray], slots: list[int],
             num_beams: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Greedy (`num_beams == 1`) or beam decoding of up to `batch_size` rows.

    Args:
      bank: the bank snapshot the slots refer to.
      rows: encoder ids, each `[n_i]` with `n_i <= inputs length`.
      slots: each row's prompt slot.
      num_beams: beams.

    Returns:
      (tokens `[len(rows), t]`, log-likelihoods `[len(rows)]`).
    """
    batch = self._encoder_batch(rows, slots, self._rows(len(rows)))
    key = (GREEDY, 1) if num_beams == 1 else (BEAM, num_beams)
    fn = self._fn(bank, key)
    self._count(key + (bank.capacity,) + batch["encoder_input_tokens"].shape)
    tokens, scores = jax.device_get(fn(bank.params, batch))
    n = len(rows)
    return np.asarray(tokens)[:n], np.asarray(scores)[:n]

  def rank(self, bank: Bank, rows: list[np.ndarray], slots: list[int],
           candidates: list[np.ndarray]) -> list[np.ndarray]:
    """Log-likelihood of each row's candidate targets, one encoder pass per
    row (`EncoderDecoderModel.score_choices`).

    Args:
      bank, rows, slots: as for `decode`; at most `rank_examples(c)` rows.
      candidates: per row, targets `[c_i, t]`; every batch has `c` slots,
        `warm_choices` or (when more) the most of any row rounded up to a
        power of two, so few programs are compiled.

    Returns:
      per row, scores `[c_i]`.
    """
    num_choices = max(self.warm_choices or 0,
                      capacity_for(max(len(c) for c in candidates)))
    examples = min(self.rank_examples(num_choices), self._rows(len(rows)))
    batch = self._encoder_batch(rows, slots, examples)
    targets = np.zeros((examples, num_choices, self.feature_lengths[
        "targets"]), np.int32)
    for i, c in enumerate(candidates):
      targets[i, :len(c)] = c
    batch["decoder_target_tokens"] = targets
    batch["decoder_input_tokens"] = np.concatenate(
        [np.zeros_like(targets[..., :1]), targets[..., :-1]], axis=-1)
    key = (RANK, num_choices)
    fn = self._fn(bank, key)
    self._count(key + (bank.capacity,) + batch["encoder_input_tokens"].shape)
    scores = np.asarray(jax.device_get(fn(bank.params, batch)))
    return [scores[i, :len(c)] for i, c in enumerate(candidates)]

  def warm(self, bank: Optional[Bank] = None) -> None:
    """Compiles greedy decoding (and rank scoring of `warm_choices` labels)
    at every input bucket for `bank` (default the current one)."""
    bank = bank or self.bank
    num_choices = self.warm_choices
    for length in self.buckets:
      row = np.ones((length,), np.int32)
      for size in self.batch_sizes:
        self.decode(bank, [row] * size, [0] * size)
      if num_choices:
        most = self.rank_examples(num_choices)
        for size in sorted({min(s, most) for s in self.batch_sizes}):
          self.rank(bank, [row] * size, [0] * size,
                    [np.ones((num_choices, 1), np.int32)] * size)

  def _rows(self, n: int) -> int:
    """The padded batch size for `n` rows (`batch_sizes`)."""
    return next(size for size in self.batch_sizes if size >= n)

  def _encoder_batch(self, rows: list[np.ndarray], slots: list[int],
                     size: int) -> dict[str, np.ndarray]:
    if len(rows) > size:
      raise ValueError(f"{len(rows)} rows for a batch of {size}.")
    length = self.bucket(max(len(r) for r in rows))
    tokens = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
      tokens[i, :len(r)] = r
    batch, _ = data.pad_batch({"encoder_input_tokens": tokens,
                               "prompt_index": np.asarray(slots, np.int32)},
                              size)
    return batch

  def _fn(self, bank: Bank, key: tuple[Any, ...]) -> Callable[..., Any]:
    full = key + (bank.capacity,)
    if full not in self._fns:
      shardings = partitioning.param_shardings(
          bank.model.init_shapes()["params"], self.mesh)
      if key[0] == RANK:
        self._fns[full] = partitioned.compile_model_fn(
            bank.model.score_choices, self.mesh, shardings)
      else:
        self._fns[full] = partitioned.compile_model_fn(
            bank.model.predict_batch, self.mesh, shardings,
            num_decodes=key[1], alpha=self.alpha,
            max_decode_length=self.feature_lengths["targets"])
    return self._fns[full]

  def _count(self, key: tuple[Any, ...]) -> None:
    """Counts a compilation the first time a program shape is run (jit
    compiles exactly then)."""
    if key not in self._seen:
      self._seen.add(key)
      self.compilations += 1
      if self.on_compile is not None:
        self.on_compile(key)
