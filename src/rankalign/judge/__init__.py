"""Gold orders by judging: a chat model ranks each list with SeAdpra's labelling rules
(Yang et al., arXiv:2502.12189, Fig. 12); the order becomes the record's ``ranking`` with its
provenance in ``meta["judge"]`` (``rankalign judge``).

>>> from rankalign.judge import build_prompt, parse_order, ChatEndpoint, judge_records   # doctest: +SKIP
"""

from rankalign.judge.backends import ChatEndpoint, LocalChatModel, Reply
from rankalign.judge.options import JudgeOptions
from rankalign.judge.prompt import PROMPT_VERSION, Parsed, build_prompt, parse_order
from rankalign.judge.run import AnswerCache, JudgeSummary, judge_file, judge_records

__all__ = ["PROMPT_VERSION", "AnswerCache", "ChatEndpoint", "JudgeOptions", "JudgeSummary", "LocalChatModel",
           "Parsed", "Reply", "build_prompt", "judge_file", "judge_records", "parse_order"]
