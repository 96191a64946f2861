"""Searches scored by the evaluator's serving-step model: the ``layer-time`` method's search path.

This layer sits above the evaluator (it scores candidate placements with
:func:`placement.evaluation.serving.step_times`, exactly the figure :func:`placement.evaluate`
reports) and beside the formulations (it starts from their fast paths and from the baselines); it
builds no MILP and calls no solver backend.

* :mod:`.objective` -- :class:`~.objective.StepObjective`, seconds per layer of one serving step;
* :mod:`.local` -- the per-layer local search (exchanges of slots, ranked by what bounds the layer,
  decided by the evaluator);
* :mod:`.method` -- the registered ``layer-time`` method.
"""
