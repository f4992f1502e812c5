"""The paper's mixture-of-Gaussians experiments (issue 4), installed as ``ssd_toolkit.toy``.

Exact diffused mixtures (``mixture``), Eq. 3 over seeds x estimators (``optimize``), one
module per experiment (``trajectories``, ``sweep``, ``statistics``, ``digits``), figures
(``plots``), outputs (``report``) and the ``ssd-toolkit toy`` commands (``cli``).
"""
