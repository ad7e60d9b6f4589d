"""The one gateway to MLflow's model registry: nothing else in ``components/`` reads or writes registered models,
their tags and aliases, or downloads a registered version (tests/test_layers.py checks it).  Steps and serving
call it and hand what it returns down to the components below, which take plain data: the drift gate takes the
champion's data profile, the refresh and prompt tuning take a loaded version, tuning's efficiency figures take
the fine-tuning reference run.

Its modules, each imported on its own (this file imports none of them, so a data step that only reads the
champion's data profile does not reach the model code, and its cache key does not follow it):

- :mod:`~components.registry.names`: registered model names (``model_name`` / ``resolve_model_name``: the config's
  ``model_name``, default ``mbprompt-<dataset>``, required for the generic reader; the only place one is formed), the
  champion alias, and the tags and artifact paths the registry keeps;
- :mod:`~components.registry.promotion`: the champion decision, a pure function of the two versions' figures;
- :mod:`~components.registry.champion`: the champion gate: the champion scored on the challenger's validation
  data, the decision applied under a promotion lock (file lock locally, optimistic re-checks remotely);
- :mod:`~components.registry.integrity`: the manifest of a version's stored files (sha256 each; its own digest a
  version tag) and the checks every loader runs before using a version;
- :mod:`~components.registry.store`: look-ups and downloads that need no model code: the champion version, a
  version by weights digest, a version's files, a frozen base's weights (serving), the champion's data profile
  (drift gate), the fine-tuning reference run (tuning efficiency);
- :mod:`~components.registry.versions`: a registered version as a trained model with its vocabularies
  (``load_version``: the champion's base for the refresh and for prompt tuning);
- :mod:`~components.registry.register`: registering a recommender and moving the champion alias;
- :mod:`~components.registry.summary`: where a run's results are (``make run`` prints it).
"""
