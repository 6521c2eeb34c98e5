"""The parts of the sequence model: small modules, each with one job, built from config.

The sequence recommender (:mod:`recsys_cli.models.recommender`) is an item table, an encoder, the
time-window scales and their fusion; everything else is a part listed in its config
(``conf/model/sequential.yaml``) and applied in the listed order:

- ``model.inputs``: side features added to every event's input vector (its behaviour type, its
  item's category: :mod:`~recsys_cli.models.parts.side`);
- ``model.state``: parts applied in order to the fused user state (the context features of past
  events and of the request, :mod:`~recsys_cli.models.parts.context`; a vector per user,
  :mod:`~recsys_cli.models.parts.user`; a variational latent, :mod:`~recsys_cli.models.parts.latent`);
- ``model.heads``: parts built only when an objective term reads their output (the next
  behaviour's logits, :mod:`~recsys_cli.models.parts.behaviour`).

:class:`~recsys_cli.models.parts.base.ModelPart` is the interface.
"""
