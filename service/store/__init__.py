"""The job store: the job row is the truth (docs: storage and queue guarantees).

``models`` and ``db`` (schema, engine, one session per call); ``create`` (new jobs),
``leases`` (claim, heartbeat, fencing), ``writes`` (fenced metrics, checkpoints, ends),
``settle`` (applying a comparison's decisions under its row lock), ``actions`` (cancel,
retry), ``sweeper``; ``queries`` (the read side), ``retention``, ``datasets``.
"""
