"""An online HTTP server: one frozen model, a prompt bank, mixed-task batches.

`python -m prompt_tuning.serve` (`prompt_tuning/serve.py`) puts the offline
multi-task serving of `analysis.serving` behind an HTTP JSON API:

  codec.py    a task's request -> encoder tokens (its own SeqIO
              preprocessors), decoded tokens -> its label (its postprocessor);
  engine.py   the frozen model and the prompt bank, compiled once per
              (mode, bank capacity, length bucket), run off the event loop;
  batcher.py  the bounded queue and the batcher forming mixed-task batches
              up to a batch size or a short deadline;
  metrics.py  Prometheus metrics;
  app.py      the starlette routes and the uvicorn server (graceful drain).

The stack and why: README.md's "Serving".
"""
