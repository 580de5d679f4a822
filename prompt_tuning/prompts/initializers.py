"""Prompt initialisers (Lester et al. 2021, Section 2.2 and Figure 3(b)).

Every factory here returns a `PromptInitializer`, a function

  init(rng, shape, embedding) -> float32 [*shape]

where `shape` is `[prompt_length, embed]` or, for a bank of prompts,
`[num_prompts, prompt_length, embed]` (each prompt of a bank is drawn with its
own key, `jax.random.fold_in(rng, i)`), and `embedding` is the model's token
embedding table `[vocab, embed]` (or None for initialisers that ignore it).

The vocabulary-based initialisers must see the *pretrained* table. The
`Prompt` module hands them the table it is built next to, which at
`model.init` time is still random; after loading pretrained weights, call
`initialize_prompt(params, init, rng)` to redraw the prompt from the loaded
table. The factories are plain functions, so gin files configure them with
`@initializers.sampled_vocab()` etc. and the library needs no gin.

Tokenisation (class labels, strings) takes any `encode(text) -> ids`
callable or an object with an `encode` method (a `seqio.Vocabulary`, a
`sentencepiece.SentencePieceProcessor`); it runs once, in Python, when the
initialiser is first called.
"""

import dataclasses
import os
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from prompt_tuning import errors
from prompt_tuning.checkpoints import original_prompts
from prompt_tuning.checkpoints import param_tree
from prompt_tuning.checkpoints import prompt_names
from prompt_tuning.checkpoints import run_checkpoints

Array = jax.Array
Shape = Sequence[int]
Encoder = Union[Callable[[str], Sequence[int]], Any]

# SentencePiece numbers pieces by frequency; T5's most common 5,000 pieces
# are the population the paper samples prompt vectors from.
DEFAULT_POPULATION = 5000


class PromptInitializer(Protocol):

  def __call__(self, rng: Array, shape: Shape,
               embedding: Optional[Array] = None) -> Array:
    ...


def _per_prompt(fn: Callable[[Array, int, int, Optional[Array]], Array]
                ) -> PromptInitializer:
  """Lifts `fn(rng, length, embed, embedding) -> [length, embed]` to banks."""

  def init(rng: Array, shape: Shape, embedding: Optional[Array] = None
           ) -> Array:
    shape = tuple(shape)
    if len(shape) == 2:
      return fn(rng, shape[0], shape[1], embedding).astype(jnp.float32)
    if len(shape) == 3:
      return jnp.stack([
          fn(jax.random.fold_in(rng, i), shape[1], shape[2], embedding)
          for i in range(shape[0])]).astype(jnp.float32)
    raise ValueError(f"Prompt shape {shape} must be [length, embed] or "
                     "[num_prompts, length, embed].")
  return init


def _need_embedding(embedding: Optional[Array], embed: int, what: str
                    ) -> Array:
  if embedding is None:
    raise ValueError(f"The {what} prompt initialiser needs the token "
                     "embedding table [vocab, embed]; none was given.")
  if embedding.ndim != 2 or embedding.shape[1] != embed:
    raise ValueError(f"The {what} prompt initialiser got an embedding table "
                     f"of shape {tuple(embedding.shape)}, expected "
                     f"[vocab, {embed}].")
  return jnp.asarray(embedding, jnp.float32)


def _encode_fn(encode: Encoder) -> Callable[[str], list[int]]:
  fn = getattr(encode, "encode", encode)
  if not callable(fn):
    raise TypeError(f"Expected an encode(text) -> ids callable or an object "
                    f"with an encode method, got {encode!r}.")
  return lambda text: [int(i) for i in fn(text)]


def random_uniform(scale: float = 0.5,
                   symmetric: bool = False) -> PromptInitializer:
  """Uniform noise: U[0, scale), or U[-scale, scale) when `symmetric`.

  The paper's default random init is U[0, 0.5).
  """
  low = -scale if symmetric else 0.0

  def fn(rng, length, embed, embedding):
    del embedding
    return jax.random.uniform(rng, (length, embed), jnp.float32, low, scale)
  return _per_prompt(fn)


def _sample_rows(rng: Array, table: Array, count: int,
                 population: int) -> Array:
  """`count` rows `[count, embed]` of `table[:population]`, distinct if able."""
  population = min(population, table.shape[0])
  ids = jax.random.choice(rng, population, (count,),
                          replace=count > population)
  return jnp.take(table, ids, axis=0)


def sampled_vocab(population: int = DEFAULT_POPULATION) -> PromptInitializer:
  """Rows of the (frozen) embedding table drawn from ids `[0, population)`.

  Rows are distinct unless the prompt is longer than the population.
  """

  def fn(rng, length, embed, embedding):
    table = _need_embedding(embedding, embed, "sampled-vocab")
    return _sample_rows(rng, table, length, population)
  return _per_prompt(fn)


def _mean_embeddings(table: Array, id_lists: Sequence[Sequence[int]],
                     texts: Sequence[str]) -> Array:
  """Mean token embedding of each id list, `[len(id_lists), embed]`."""
  rows = []
  for ids, text in zip(id_lists, texts):
    if not ids:
      raise ValueError(f"Class label {text!r} tokenises to no ids.")
    if max(ids) >= table.shape[0]:
      raise ValueError(f"Class label {text!r} has token id {max(ids)} beyond "
                       f"the embedding table's {table.shape[0]} rows.")
    rows.append(jnp.mean(jnp.take(table, jnp.asarray(ids), axis=0), axis=0))
  return jnp.stack(rows)


def class_labels(labels: Sequence[str],
                 encode: Encoder,
                 population: int = DEFAULT_POPULATION) -> PromptInitializer:
  """One position per class label, the rest sampled from the vocabulary.

  Position i (for i < len(labels)) is the mean embedding of the tokens of
  `labels[i]`; remaining positions are drawn as in `sampled_vocab`.

  Args:
    labels: the task's label strings in class order, e.g.
      `prompt_tuning.data.super_glue.label_strings(task_name)`.
    encode: tokeniser; see the module docstring.
    population: ids the filler positions are drawn from.
  """
  labels = tuple(labels)
  if not labels:
    raise ValueError("class_labels needs at least one label string (free-"
                     "text tasks such as ReCoRD have none; use "
                     "sampled_vocab instead).")
  tokenised: list[list[int]] = []

  def fn(rng, length, embed, embedding):
    table = _need_embedding(embedding, embed, "class-label")
    if len(labels) > length:
      raise ValueError(f"{len(labels)} class labels do not fit a prompt of "
                       f"length {length}.")
    if not tokenised:
      tokenised.extend(_encode_fn(encode)(text) for text in labels)
    label_rows = _mean_embeddings(table, tokenised, labels)
    filler = _sample_rows(rng, table, length - len(labels), population)
    return jnp.concatenate([label_rows, filler], axis=0)
  return _per_prompt(fn)


def from_string(text: str,
                encode: Encoder,
                population: int = DEFAULT_POPULATION) -> PromptInitializer:
  """The embedded tokens of `text` first, the rest sampled from the vocabulary.

  Raises ValueError (at initialisation) if `text` has more tokens than the
  prompt has positions.
  """
  tokenised: list[list[int]] = []

  def fn(rng, length, embed, embedding):
    table = _need_embedding(embedding, embed, "from-string")
    if not tokenised:
      tokenised.append(_encode_fn(encode)(text))
    ids = tokenised[0]
    if len(ids) > length:
      raise ValueError(f"Prompt text {text!r} is {len(ids)} tokens long, "
                       f"more than the prompt length {length}.")
    if ids and max(ids) >= table.shape[0]:
      raise ValueError(f"Prompt text {text!r} has token id {max(ids)} beyond "
                       f"the embedding table's {table.shape[0]} rows.")
    text_rows = jnp.take(table, jnp.asarray(ids, jnp.int32), axis=0)
    filler = _sample_rows(rng, table, length - len(ids), population)
    return jnp.concatenate([text_rows, filler], axis=0)
  return _per_prompt(fn)


PROMPT_FILE_FIX = ("PROMPT_FILE must be a NumPy .npy file of shape "
                   "[length, embed], as numpy.save or "
                   "scripts/export_prompt.py write it.")


def load_npy(path: str, what: str = "Prompt file", fix: str = PROMPT_FILE_FIX,
             mmap_mode: Optional[str] = None) -> np.ndarray:
  """A `.npy` array, with errors that name `what`, the file and `fix`.

  Never unpickles; `mmap_mode='r'` reads only the header until data is used
  (and leaves the values unchecked). Read whole, the values must be finite
  (`check_finite`).
  """
  try:
    value = original_prompts.read_npy(path, mmap_mode=mmap_mode)
  except FileNotFoundError as e:
    raise errors.ConfigError(f"{what} {path} does not exist. {fix}") from e
  except original_prompts.PromptSourceError as e:
    raise errors.ConfigError(f"{what} {e} {fix}") from e
  if mmap_mode is None:
    check_finite(value, f"{what} {path}", fix)
  return value


def check_finite(value: np.ndarray, source: str, fix: str) -> None:
  """Raises ConfigError naming `source` if `value` holds NaN or Inf.

  A non-finite prompt would only show as a NaN loss (whose advice, lower
  LEARNING_RATE, would not help); the message counts the bad values and
  gives the first one's index.
  """
  value = np.asarray(value)
  if not np.issubdtype(value.dtype, np.inexact):
    return
  bad = ~np.isfinite(value)
  count = int(np.count_nonzero(bad))
  if not count:
    return
  first = tuple(int(i) for i in np.argwhere(bad)[0])
  kinds = sorted({"NaN" if np.isnan(v) else "Inf" for v in value[bad][:1000]})
  raise errors.ConfigError(
      f"{source} holds {count} non-finite value(s) ({'/'.join(kinds)}) of "
      f"{value.size}, the first at index {list(first)} (shape "
      f"{list(value.shape)}): training would only see a NaN loss. Use a "
      f"prompt with finite values (re-export it from a run that did not "
      f"diverge, or fix the array and np.save it again). {fix}")


def from_file(path: Union[str, os.PathLike[str]]) -> PromptInitializer:
  """A prompt saved with `numpy.save`, `[length, embed]`.

  For a bank the file may hold the whole bank `[num_prompts, length, embed]`
  or one `[length, embed]` prompt, copied to every slot.
  """

  def init(rng: Array, shape: Shape, embedding: Optional[Array] = None
           ) -> Array:
    del rng, embedding
    return _fitted(load_npy(os.fspath(path)), shape,
                   f"Prompt file {os.fspath(path)}")
  return init


def _fits(found: Shape, shape: Shape) -> bool:
  """Whether an array of shape `found` can fill a prompt of `shape`: the
  same shape, or one `[length, embed]` prompt for every slot of a bank."""
  found, shape = tuple(found), tuple(shape)
  return found == shape or (len(shape) == 3 and found == shape[1:])


def _expected(shape: Shape) -> str:
  """The shapes `_fits` accepts for `shape`, for messages."""
  shape = tuple(shape)
  return " or ".join(str(list(s)) for s in
                     ([shape] if len(shape) == 2 else [shape, shape[1:]]))


def _fitted(value: np.ndarray, shape: Shape, source: str) -> Array:
  """`value` as the float32 prompt of `shape`; one `[length, embed]` prompt
  fills every slot of a bank. ConfigError naming `source` otherwise."""
  shape = tuple(shape)
  if _fits(value.shape, shape):
    return jnp.broadcast_to(jnp.asarray(value, jnp.float32), shape)
  raise errors.ConfigError(
      f"{source} holds an array of shape {list(value.shape)}, expected "
      f"{_expected(shape)} ([length, embed]); set PROMPT_LENGTH to its "
      "length.")


def from_t5x_run(path: Union[str, os.PathLike[str]],
                 step: Optional[int] = None,
                 name: Optional[str] = None) -> PromptInitializer:
  """The prompt a T5X prompt run trained: the original prompt-tuning code's
  (`encoder/prompt/prompt/prompt`, also its `numpy_checkpoints/`) or our
  T5X export's (`prompt/prompt`); `checkpoints.original_prompts` reads it.

  Args:
    path: the run's model directory, a `checkpoint_<step>` folder, a
      `numpy_checkpoints/` folder or one of its files.
    step: the checkpoint step; default the latest.
    name: the '/'-joined prompt parameter; default found (see
      `original_prompts.read_prompt`).
  """

  def init(rng: Array, shape: Shape, embedding: Optional[Array] = None
           ) -> Array:
    del rng, embedding
    try:
      value, found, _ = original_prompts.read_prompt(path, step, name)
    except (FileNotFoundError, original_prompts.PromptSourceError) as e:
      raise errors.ConfigError(
          f"PROMPT_CHECKPOINT: {e} It must be a T5X prompt run (model "
          "directory, checkpoint_<step> folder) or its numpy_checkpoints/."
      ) from e
    source = f"Prompt {found} of {os.fspath(path)}"
    check_finite(value, source, "PROMPT_CHECKPOINT must hold a finite "
                 "prompt.")
    return _fitted(value, shape, source)
  return init


PROMPT_RUN_FIX = ("PROMPT_RUN must be the MODEL_DIR of a prompt_tuning.train "
                  "run of a soft prompt (prompts/*.gin), e.g. "
                  "--gin.PROMPT_RUN=\"'/runs/rte'\".")


@dataclasses.dataclass(frozen=True)
class RunPrompt:
  """A `PromptInitializer`: the soft prompt of a `prompt_tuning.train` run.

  The prompt (`prompt_names.SOFT_PROMPT`, `[length, embed]` or a bank
  `[num_prompts, length, embed]`) of one of the run's checkpoints is read
  with `run_checkpoints`, verified against its recorded checksums, and used
  as it is; one `[length, embed]` prompt fills every slot of a bank.

  `check(shape)` compares the saved shape with the model's from the
  checkpoint's metadata alone, so a prompt that does not fit is refused
  before any array is read; calling the initialiser checks first. The
  preflight (`model.init_shapes`) calls it, as it does `from_file`'s.

  Attributes:
    model_dir: the run's MODEL_DIR.
    step: the checkpoint step; None for the latest.
    best: read `MODEL_DIR/best/` (the best evaluation's checkpoints, kept
      when BEST_METRIC is set) instead of `MODEL_DIR/checkpoints/`.
  """
  model_dir: str
  step: Optional[int] = None
  best: bool = False

  @property
  def subdir(self) -> str:
    """The folder of the run the step is read from."""
    return run_checkpoints.BEST if self.best else run_checkpoints.CHECKPOINTS

  def _source(self, step: int) -> str:
    return (f"PROMPT_RUN {os.fspath(self.model_dir)} (its "
            f"{self.subdir}/{step})")

  def _not_found(self, e: Exception) -> errors.ConfigError:
    """The error for a run, `best/` or step that is not there (`e` says
    which and lists the steps there are), with the setting to change."""
    name = os.path.basename(os.path.normpath(os.fspath(self.model_dir)))
    if name in (run_checkpoints.CHECKPOINTS, run_checkpoints.BEST):
      hint = (f" Set PROMPT_RUN to the run's MODEL_DIR, not its {name}/ "
              "folder (PROMPT_RUN_BEST=True reads best/).")
    elif run_checkpoints.completed_steps(self.model_dir, self.subdir):
      hint = " Set PROMPT_RUN_STEP to one of them, or None for the latest."
    elif self.best:
      hint = (" best/ is written only by runs with a BEST_METRIC; set "
              "PROMPT_RUN_BEST=False to read the run's checkpoints/.")
    else:
      hint = ""
    return errors.ConfigError(
        f"PROMPT_RUN {os.fspath(self.model_dir)}: {e}{hint}")

  def check(self, shape: Shape) -> int:
    """Raises `errors.ConfigError` unless the run's prompt fits `shape`.

    Reads the checkpoint's metadata only.

    Args:
      shape: the model's prompt shape, `[length, embed]` or
        `[num_prompts, length, embed]`.

    Returns:
      The checkpoint step the prompt is read from.
    """
    shape = tuple(shape)
    try:
      found, step = run_checkpoints.trainable_shapes(
          self.model_dir, self.step, self.subdir)
    except run_checkpoints.RunCheckpointNotFoundError as e:
      raise self._not_found(e) from e
    source = self._source(step)
    if prompt_names.SOFT_PROMPT not in found:
      raise errors.ConfigError(
          f"{source} holds no soft prompt ({prompt_names.SOFT_PROMPT}); its "
          f"trained parameters are {sorted(found) or 'none'}. A deep prompt "
          "starts from a run with prompts/deep_from_run.gin "
          f"(DEEP_PROMPT_RUN). {PROMPT_RUN_FIX}")
    saved = tuple(found[prompt_names.SOFT_PROMPT])
    if not _fits(saved, shape):
      raise errors.ConfigError(
          f"{source} holds a prompt of shape {list(saved)}, expected "
          f"{_expected(shape)} ([length, embed], or a bank [num_prompts, "
          f"length, embed]). {_run_fix(saved, shape)}")
    return step

  def __call__(self, rng: Array, shape: Shape,
               embedding: Optional[Array] = None) -> Array:
    del rng, embedding
    step = self.check(shape)
    try:
      flat, _ = run_checkpoints.read_trainable(
          self.model_dir, step, self.subdir,
          prefix=prompt_names.SOFT_PROMPT.split(param_tree.SEPARATOR)[0])
    except run_checkpoints.RunCheckpointNotFoundError as e:
      raise self._not_found(e) from e
    source = self._source(step)
    value = flat[prompt_names.SOFT_PROMPT]
    check_finite(value, source, PROMPT_RUN_FIX)
    return _fitted(value, shape, source)


def _run_fix(saved: tuple[int, ...], shape: tuple[int, ...]) -> str:
  """How to make a model whose prompt is `shape` take a run's `saved`."""
  if saved[-1] != shape[-1]:
    return (f"Its prompt vectors are {saved[-1]} wide, this model's "
            f"embedding {shape[-1]}: use the model size the run was "
            "trained with (its models/*.gin).")
  settings = [f"PROMPT_LENGTH = {saved[-2]}"]
  if len(saved) == 3:
    settings.append(f"NUM_PROMPTS = {saved[0]}")
  note = (" (its one prompt fills every slot of this model's bank)"
          if len(saved) == 2 and len(shape) == 3 else "")
  return (f"Set {' and '.join(settings)} as the run had{note}, or start "
          "from a run with this model's.")


def from_run(model_dir: Union[str, os.PathLike[str]],
             step: Optional[int] = None,
             best: bool = False) -> RunPrompt:
  """The soft prompt of a `prompt_tuning.train` run (see `RunPrompt`).

  Args:
    model_dir: the run's MODEL_DIR.
    step: the checkpoint step; default the latest.
    best: read the run's `best/` checkpoints instead.
  """
  return RunPrompt(os.fspath(model_dir), None if step is None else int(step),
                   bool(best))


def initialize_prompt(params: dict[str, Any],
                      init: PromptInitializer,
                      rng: Array,
                      prompt_name: str = prompt_names.SOFT_PROMPT,
                      embedding_name: str = param_tree.EMBEDDING
                      ) -> dict[str, Any]:
  """Redraws the prompt of a (pretrained) parameter tree; returns a new tree.

  The prompt's shape and the embedding table are read from `params`, so
  vocabulary-based initialisers see the loaded, frozen table. Unboxed
  parameters only; no leaf other than the prompt changes.

  Args:
    params: nested parameter dict holding `prompt_name` and `embedding_name`.
    init: the initialiser, e.g. `PromptTransformer.prompt_init`.
    rng: key; the same key gives the same prompt.
    prompt_name: '/'-joined name of the prompt parameter.
    embedding_name: '/'-joined name of the token embedding `[vocab, embed]`.
  """
  flat = param_tree.flatten_params(params)
  for name in (prompt_name, embedding_name):
    if name not in flat:
      raise KeyError(f"Parameter {name!r} not found; have "
                     f"{sorted(flat)[:8]}...")
  flat[prompt_name] = init(rng, flat[prompt_name].shape, flat[embedding_name])
  return param_tree.unflatten_params(flat)
