"""Iterative alignment: generation in the loop, SPA, PRO self-bootstrapping (docs/iterative.md).

- :mod:`.generation`: N samples per prompt from the current policy, in a resumable store;
- :mod:`.judge`: the implicit-reward judge beta * (logp_policy - logp_ref) and its agreement
  with gold labels;
- :mod:`.spa_trainer`: the trainer of SPA's refinement rounds (de-coupled noise detection);
- :mod:`.spa`: SPA (Kim et al., arXiv:2406.04412, Algorithm 1), pairwise and list-wise.

Heavy libraries are imported inside the functions that need them.
"""
