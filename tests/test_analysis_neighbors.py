"""Nearest neighbours by cosine similarity on a hand-built embedding table,
the paper's two summary counts, and the command line on a real checkpoint."""

import json

import numpy as np
import pytest

from helpers import load_script, shared_path
from prompt_tuning.analysis import neighbors
from prompt_tuning.data import locations
from prompt_tuning.data import vocab as vocab_lib

# Eight 2-D tokens at these angles (degrees), with very different norms so
# that a dot-product ranking would differ from the cosine one.
TOKEN_ANGLES = (0, 30, 60, 90, 120, 150, 180, 270)
TOKEN_NORMS = (1, 5, 0.1, 3, 2, 1, 4, 1)
PROMPT_ANGLES = (10, 85, 5, 175)
PROMPT_NORMS = (7, 0.5, 2, 3)
# Worked out by hand from the angular distances.
EXPECTED_TOP5 = ([0, 1, 2, 3, 7], [3, 2, 4, 1, 5], [0, 1, 2, 3, 7],
                 [6, 5, 4, 3, 7])


def _vectors(angles, norms):
  rad = np.deg2rad(angles)
  return np.stack([np.cos(rad), np.sin(rad)], 1) * np.asarray(norms)[:, None]


TABLE = _vectors(TOKEN_ANGLES, TOKEN_NORMS)
PROMPT = _vectors(PROMPT_ANGLES, PROMPT_NORMS)


def test_cosine_top_k_on_a_hand_built_table():
  ids, sims = neighbors.cosine_top_k(PROMPT, TABLE, k=5)
  np.testing.assert_array_equal(ids, EXPECTED_TOP5)
  np.testing.assert_allclose(sims[0], np.cos(np.deg2rad([10, 20, 50, 80,
                                                          100])), atol=1e-6)
  # Chunking the vocabulary changes nothing.
  chunked, _ = neighbors.cosine_top_k(PROMPT, TABLE, k=5, chunk_size=3)
  np.testing.assert_array_equal(chunked, ids)
  # A dot product would have picked token 1 (norm 5) for position 0.
  assert np.argmax(PROMPT[0] @ TABLE.T) == 1


def test_report_counts_labels_and_shared_neighbours():
  report = neighbors.neighbor_report(
      PROMPT, TABLE, k=3, namer=lambda i: f"tok{i}",
      labels=("yes", "no"), label_ids=(6, 5))
  assert report.ids.shape == (4, 3)
  assert report.pieces[1] == ["tok3", "tok2", "tok4"]
  # Labels 6 and 5 are in the top-5 of positions 1 and 3 only (position 1
  # has token 5 fifth, beyond the k=3 shown: the count still uses top-5).
  assert report.positions_with_label == [1, 3]
  assert report.shared_groups == {0: [0, 2]} and report.num_sharing == 2
  assert report.summary_lines() == [
      "2 of 4 positions have a class label (yes, no) among their top-5 "
      "neighbours.",
      "2 of 4 positions share their nearest neighbour with another position "
      "(1 shared tokens)."]
  markdown = neighbors.to_markdown(report)
  assert "| pos | #1 | #2 | #3 |" in markdown
  assert "| 1* | `tok3` 1.00 | `tok2` 0.91 | `tok4` 0.82 |" in markdown
  data = json.loads(neighbors.to_json(report))
  assert data["positions"][3]["neighbors"][0] == {
      "id": 6, "piece": "tok6", "cosine": pytest.approx(np.cos(np.deg2rad(5)),
                                                        abs=1e-5)}
  assert data["shared_nearest"] == {"0": [0, 2]}


def test_width_mismatch_is_an_error():
  with pytest.raises(ValueError, match="width 3 differs"):
    neighbors.cosine_top_k(np.ones((2, 3)), TABLE, 1)


def test_t5_pieces_and_label_first_pieces():
  vocab = vocab_lib.get_vocabulary(str(shared_path(*locations.VOCAB_IN_SHARED)))
  namer = neighbors.piece_namer(vocab)
  assert namer(1) == "</s>" and namer(32099) == "<extra_id_0>"
  assert namer(32127) == "<unused_32127>"
  ids = neighbors.label_token_ids(("entailment", "not_entailment"), vocab)
  assert ids == [vocab.encode("entailment")[0],
                 vocab.encode("not_entailment")[0]]
  assert namer(ids[1]).lstrip("▁") == "not"


_script = load_script


def test_command_line_on_the_tiny_checkpoint(tmp_path, capsys):
  prompt = np.random.RandomState(0).randn(3, 4).astype(np.float32)
  np.save(tmp_path / "p.npy", prompt)
  main = _script("nearest_neighbors").main
  main([f"--prompt={tmp_path / 'p.npy'}",
        f"--checkpoint={shared_path('fixtures', 't5x_t5_1_1_tiny', 'checkpoint_3')}",
        f"--vocab={shared_path(*locations.VOCAB_IN_SHARED)}",
        "--task=taskless_super_glue_rte_v102", "--k=4",
        f"--json={tmp_path / 'n.json'}", f"--markdown={tmp_path / 'n.md'}"])
  out = capsys.readouterr().out
  assert "positions have a class label (entailment, not_entailment)" in out
  data = json.loads((tmp_path / "n.json").read_text())
  assert len(data["positions"]) == 3
  assert len(data["positions"][0]["neighbors"]) == 4
  assert (tmp_path / "n.md").read_text() == out.rstrip("\n") + "\n"
