"""The run lifecycle: what happens around ``Trainer.fit`` / ``validate`` / ``test``.

One module per concern, found by name:

* ``tasks``: ``train``, ``eval``, ``extract``, ``prepare`` (build the objects, call the Trainer);
* ``checkpoints``: reading, writing, which to keep, which to resume from, OpenGait's files;
* ``evaluation``: the ``Evaluation`` callback (the protocol's result, its reuse, submissions);
* ``rank_failures``: a failure on one rank ends every rank;
* ``stopping`` (SIGTERM / Ctrl+C), ``requeue`` (SLURM preemption), ``resume`` (``resume=<run
  dir>``), ``curves`` (logs kept whole across a resume), ``extract`` (embedding user folders).

Nothing is imported here, so that ``cli`` reads the resume arguments without importing torch.
"""
