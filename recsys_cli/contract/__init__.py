"""The contract between data, models and training: typed values that cross package boundaries.

- :class:`~recsys_cli.contract.data_spec.DataSpec`: what the prepared data tells every builder;
- :class:`~recsys_cli.contract.batch.Batch`: the batch fields, one name per field;
- :class:`~recsys_cli.contract.output.ModelOutput`: what every model returns;
- :class:`~recsys_cli.contract.scales.ScaleSet`: the parsed time-window scales.

``data/``, ``models/`` and ``training/`` import from here, never from each other's internals
(``models/`` and ``training/`` never import ``data/``).
"""

from recsys_cli.contract.batch import Batch, eval_targets
from recsys_cli.contract.data_spec import DataSpec
from recsys_cli.contract.output import ModelOutput
from recsys_cli.contract.scales import ScaleSet, TimeWindowScale

__all__ = ["Batch", "DataSpec", "ModelOutput", "ScaleSet", "TimeWindowScale", "eval_targets"]
