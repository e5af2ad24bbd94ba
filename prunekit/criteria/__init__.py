"""Saliency criteria: one interface (:class:`Criterion`, verb :meth:`Criterion.score`) and a registry.

>>> list_criteria()
['sfm_entropy', 'mapex', 'capacity', 'independence', 'information', 'linear_ensembles', 'afie',
 'l1', 'l2', 'fpgm', 'bn_scale', 'random', 'taylor', 'hrank', 'chip', 'grad_x_activation']
>>> get_criterion("sfm_entropy", estimator="pooled").score(model, probe=train_set)

One small module per family; importing this package registers them all, seed criteria first.
"""
from prunekit.criteria import afie, attribution, datadriven, ensembles, entropy, information, mapex, norms  # noqa: F401  (register)
from prunekit.criteria.base import (
    Criterion,
    Param,
    Scores,
    as_criterion,
    criterion_class,
    get_criterion,
    list_criteria,
    register_criterion,
)

__all__ = ["Criterion", "Param", "Scores", "as_criterion", "criterion_class", "get_criterion", "list_criteria",
           "register_criterion"]
