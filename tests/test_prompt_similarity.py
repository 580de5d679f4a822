"""SPoT's prompt similarity measures on hand-made prompts with known
answers, the N x N matrix, the ranking of sources, and the command line on
`.npy` files and a run's `best/` checkpoint."""

import json

import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import load_script
from prompt_tuning import errors
from prompt_tuning.analysis import similarity

E = np.eye(4)  # Four orthonormal directions in a width-4 embedding.


def _angles(*degrees):
  """2-D unit vectors at `degrees`: `[len(degrees), 2]`."""
  rad = np.deg2rad(degrees)
  return np.stack([np.cos(rad), np.sin(rad)], 1)


def test_identical_prompts_score_one():
  prompt = np.random.RandomState(0).randn(5, 8)
  assert similarity.pooled_cosine(prompt, prompt) == pytest.approx(1.0)
  assert similarity.max_cosine(prompt, prompt) == pytest.approx(1.0)


def test_orthogonal_prompts_score_zero():
  source, target = E[:2] * 3.0, E[2:] * 0.5
  assert similarity.pooled_cosine(source, target) == pytest.approx(0.0)
  assert similarity.max_cosine(source, target) == pytest.approx(0.0)
  assert similarity.max_cosine(target, source) == pytest.approx(0.0)


def test_negation_scores_minus_one_pooled():
  prompt = np.random.RandomState(1).randn(6, 8)
  assert similarity.pooled_cosine(prompt, -prompt) == pytest.approx(-1.0)
  # One position: its only match is its opposite.
  assert similarity.max_cosine(prompt[:1], -prompt[:1]) == pytest.approx(-1.0)


def test_scaled_copies_of_source_positions_score_one_by_max():
  source = E[:3]  # e1, e2, e3.
  target = np.stack([2.0 * E[0], 0.5 * E[0], 4.0 * E[1]])  # Scaled copies.
  assert similarity.max_cosine(source, target) == pytest.approx(1.0)
  # The pooled directions differ: (2.5, 4, 0) against (1, 1, 1).
  assert similarity.pooled_cosine(source, target) == pytest.approx(
      6.5 / (np.sqrt(2.5**2 + 4**2) * np.sqrt(3)))
  # Rows in any direction of the source's, at any length, score 1 too.
  angled = _angles(0, 50, 130)
  copies = np.stack([2.0 * angled[1], 0.5 * angled[0], 7.0 * angled[1]])
  assert similarity.max_cosine(angled, copies) == pytest.approx(1.0)


def test_max_measure_is_asymmetric_and_averages_over_the_target():
  source, target = E[:2], E[:1]  # The source holds e1 and e2; target e1.
  assert similarity.max_cosine(source, target) == pytest.approx(1.0)
  # Swapped: e1 is matched (1), e2 is orthogonal to the only position (0).
  assert similarity.max_cosine(target, source) == pytest.approx(0.5)
  # Known non-trivial value: target positions at 45 and 90 degrees from
  # the one source position: (cos 45 + cos 90) / 2.
  value = similarity.max_cosine(_angles(0), _angles(45, 90))
  assert value == pytest.approx(np.cos(np.pi / 4) / 2)
  # The position cosines are [target, source].
  cosines = similarity.position_cosines(_angles(0, 90), _angles(45))
  np.testing.assert_allclose(cosines, [[np.sqrt(0.5), np.sqrt(0.5)]])


def test_pooled_cosine_of_prompts_of_different_lengths():
  # Means (0.5, 0.5) and (1, 0): 45 degrees apart; symmetric.
  value = similarity.pooled_cosine(E[:2, :2], E[:1, :2])
  assert value == pytest.approx(np.sqrt(0.5))
  assert similarity.pooled_cosine(E[:1, :2], E[:2, :2]) == value


def _prompts():
  rng = np.random.RandomState(2)
  return [rng.randn(length, 6) for length in (3, 5, 4, 2)]


def test_matrix_symmetry_diagonal_and_entries():
  prompts = _prompts()
  pooled = similarity.similarity_matrix(prompts, "pooled")
  assert pooled.shape == (4, 4)
  np.testing.assert_array_equal(pooled, pooled.T)
  np.testing.assert_array_equal(np.diag(pooled), 1.0)
  maxed = similarity.similarity_matrix(prompts, "max")
  np.testing.assert_array_equal(np.diag(maxed), 1.0)
  assert not np.allclose(maxed, maxed.T)  # Asymmetric.
  for t in range(4):
    for s in range(4):
      if s != t:  # Row = target, column = source.
        assert maxed[t, s] == pytest.approx(
            similarity.max_cosine(prompts[s], prompts[t]))
        assert pooled[t, s] == pytest.approx(
            similarity.pooled_cosine(prompts[s], prompts[t]))


def test_ranking_orders_sources_most_similar_first():
  target = _angles(0, 10)  # [2, 2]
  sources = {"far": _angles(170, 180), "near": _angles(5),
             "mid": _angles(60, 80), "wide": _angles(0, 10, 180, 180)}
  ranked = similarity.rank_sources(target, sources, by="max")
  assert [r.name for r in ranked] == ["wide", "near", "mid", "far"]
  assert ranked[0].max == pytest.approx(1.0)
  ranked = similarity.rank_sources(target, sources, by="pooled")
  # Mean directions 5, 70, about 95 and 175 degrees against the target's 5.
  assert [r.name for r in ranked] == ["near", "mid", "wide", "far"]
  scores = [r.pooled for r in ranked]
  assert scores == sorted(scores, reverse=True)
  for r in ranked:  # Both scores, with the target as the target.
    assert r.pooled == pytest.approx(
        similarity.pooled_cosine(sources[r.name], target))
    assert r.max == pytest.approx(
        similarity.max_cosine(sources[r.name], target))


def test_clear_errors():
  with pytest.raises(similarity.SimilarityError,
                     match=r"rte has embedding width 4 but cb has 6"):
    similarity.similarity_matrix([np.ones((2, 4)), np.ones((2, 6))],
                                 names=["rte", "cb"])
  with pytest.raises(similarity.SimilarityError, match="width 4 but .* 3"):
    similarity.max_cosine(np.ones((2, 4)), np.ones((2, 3)))
  with pytest.raises(similarity.SimilarityError, match="is empty"):
    similarity.pooled_cosine(np.ones((0, 4)), np.ones((2, 4)))
  with pytest.raises(similarity.SimilarityError, match="at least 2 prompts"):
    similarity.similarity_matrix([np.ones((2, 4))])
  with pytest.raises(similarity.SimilarityError, match="at least 2 prompts"):
    similarity.similarity_matrix([])
  with pytest.raises(similarity.SimilarityError, match="No source prompts"):
    similarity.rank_sources(np.ones((2, 4)), {})
  with pytest.raises(similarity.SimilarityError,
                     match="position 1 of b is all zeros"):
    similarity.max_cosine(np.ones((2, 4)), np.stack([np.ones(4),
                                                     np.zeros(4)]),
                          target_name="b")
  with pytest.raises(similarity.SimilarityError, match=r"shape \[4\]"):
    similarity.pooled_cosine(np.ones(4), np.ones((2, 4)))
  with pytest.raises(similarity.SimilarityError, match="Unknown .* 'mean'"):
    similarity.similarity_matrix(_prompts(), "mean")
  # Bad input, not a bug: the command line prints it as one line.
  assert issubclass(similarity.SimilarityError, errors.ConfigError)


def _write_best_checkpoint(model_dir, step, prompt):
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(model_dir / "best" / str(step) / "state",
                      {"step": np.int32(step),
                       "trainable": {"prompt": {"prompt": prompt}}})


def test_command_line_writes_markdown_json_and_png(tmp_path, capsys):
  rng = np.random.RandomState(3)
  for name, length in (("rte", 4), ("cb", 3), ("copa", 5)):
    np.save(tmp_path / f"{name}.npy", rng.randn(length, 8).astype(np.float32))
  np.save(tmp_path / "bank.npy", rng.randn(2, 3, 8).astype(np.float32))
  boolq = rng.randn(6, 8).astype(np.float32)
  _write_best_checkpoint(tmp_path / "boolq", 5, boolq)
  main = load_script("prompt_similarity").main
  specs = [tmp_path / f"{n}.npy" for n in ("rte", "cb", "copa", "bank")]
  specs.append(tmp_path / "boolq" / "best")
  assert main([f"--prompts={','.join(map(str, specs))}", "--measure=max",
               "--target=rte", f"--markdown={tmp_path / 's.md'}",
               f"--json={tmp_path / 's.json'}",
               f"--heatmap={tmp_path / 'plots' / 's.png'}"]) == 0
  out = capsys.readouterr().out
  assert (tmp_path / "s.md").read_text() == out
  assert "| target \\ source | rte | cb | copa | bank[0] | bank[1] | boolq |" \
      in out
  data = json.loads((tmp_path / "s.json").read_text())
  names = ["rte", "cb", "copa", "bank[0]", "bank[1]", "boolq"]
  assert data["names"] == names and data["measure"] == "max"
  matrix = np.asarray(data["matrix"])
  np.testing.assert_array_equal(np.diag(matrix), 1.0)
  rte = np.load(tmp_path / "rte.npy")
  assert matrix[0, 5] == pytest.approx(similarity.max_cosine(boolq, rte),
                                       abs=1e-6)
  ranking = data["ranking"]
  assert ranking["target"] == "rte"
  assert [s["name"] for s in ranking["sources"]] == [
      n for _, n in sorted((-matrix[0, i], n) for i, n in enumerate(names)
                           if n != "rte")]
  png = (tmp_path / "plots" / "s.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n"

  # --subdir=best reads a MODEL_DIR's best/; a target given as a path joins
  # the matrix and is ranked against the others.
  assert main([f"--prompts={tmp_path / 'boolq'},{specs[1]}", "--subdir=best",
               f"--target={specs[2]}", f"--json={tmp_path / 't.json'}"]) == 0
  data = json.loads((tmp_path / "t.json").read_text())
  assert data["names"] == ["boolq", "cb", "copa"]
  assert data["ranking"]["target"] == "copa"
  assert {s["name"] for s in data["ranking"]["sources"]} == {"boolq", "cb"}
  copa = np.load(specs[2])
  assert data["matrix"][2][0] == pytest.approx(
      similarity.pooled_cosine(boolq, copa), abs=1e-6)
  # Widths must agree.
  np.save(tmp_path / "wide.npy", np.ones((2, 6), np.float32))
  with pytest.raises(similarity.SimilarityError,
                     match="rte has embedding width 8 but wide has 6"):
    main([f"--prompts={specs[0]}", f"--target={tmp_path / 'wide.npy'}"])
