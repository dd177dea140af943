"""Every method hyper-parameter, defined once (SPEC §5 "Defaults").

The training config (:class:`rankalign.training.config.ListwiseConfig`) inherits these
fields, and each loss's ``__init__`` takes its defaults from :data:`DEFAULTS`, so a default
lives in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _f(default, help_text: str, **kw):
    return field(default=default, metadata={"help": help_text, **kw})


@dataclass
class LossHyperParams:
    beta: float = _f(0.1, "Inverse temperature of reference-model methods (DPO-BT, DPO-PL, KTO, LiPO, SPO student).")
    pair_mode: str = _f("1vso", "How pairwise methods (DPO-BT, IPO, SLiC) form pairs from a list: "
                                "'1vso' best vs each other (DPO-1vsO), 'pw' all ordered pairs (DPO-pw), seed 003 §5.")
    slic_delta: float = _f(1.0, "SLiC hinge margin delta.")
    slic_lambda: float = _f(0.1, "SLiC weight of the NLL regulariser on the best response.")
    ipo_tau: float = _f(0.1, "IPO regularisation tau; the target margin is 1/(2 tau).")
    kto_lambda_d: float = _f(1.0, "KTO weight of desirable responses.")
    kto_lambda_u: float = _f(1.0, "KTO weight of undesirable responses.")
    spo_alpha: float = _f(1.0, "SPO teacher temperature alpha: soft labels softmax(r/alpha).")
    seadpra_alpha: float = _f(0.01, "SeAdpra weight of the Perceptual Alignment (SFT) term.")
    pro_sft_weight: float = _f(0.05, "PRO SFT coefficient; the term is weighted by this times (n-1)^2.")
    pro_sft_mode: str = _f("sum", "PRO SFT term: 'sum' of token log-probs (official code) or 'mean' (token mean).")
    pro_use_scores: bool = _f(True, "PRO: use reward scores as dynamic temperature when the data has scores.")
    rrhf_weight: float = _f(1.0, "RRHF weight of the ranking hinge term.")
    rrhf_length_penalty: float = _f(1.0, "RRHF length penalty: s(y) = logp(y) / |y|^length_penalty.")
    weight_eps: float = _f(1e-8, "Lower clamp of (APDF) weights before their log is taken.")


DEFAULTS = LossHyperParams()
