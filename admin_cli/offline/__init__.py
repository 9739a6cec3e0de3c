"""Offline studies on logged or public data: MovieLens loading, replay and off-policy evaluation.

- :mod:`.movielens` reads the MovieLens file formats; :mod:`.movielens_store` loads
  them into PostgreSQL and reads them back.
- :mod:`.bandit_problem` turns ratings into a bandit problem and a uniformly logged
  event stream; :mod:`.replay` evaluates the ``core_ext`` policies on that stream
  with the replay method (Li, Chu, Langford & Wang 2011); :mod:`.plots` draws its PNG.
- :mod:`.estimators` holds the off-policy estimators (IPS, SNIPS, DM, DR);
  :mod:`.evaluate` applies them to an experiment's logged decisions.
"""
