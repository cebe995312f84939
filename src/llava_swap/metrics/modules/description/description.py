"""evaluate module `description`: BLEU, ROUGE-L and fact score of seismic event descriptions; a thin wrapper, the
logic is `llava_swap.metrics.description`.

Load it offline with `evaluate.load(llava_swap.metrics.path("description"))`. Imports are absolute on purpose: a
relative import makes evaluate try to download the imported file.
"""

import datasets
import evaluate

from llava_swap.metrics.description import description_scores

_DESCRIPTION = """\
Scores free-text descriptions of seismic events against one reference description each: corpus BLEU (sacrebleu,
0-100 scale), mean ROUGE-L F1 (rouge_score, Porter stemmer, 0-1) and, when the events' facts are given, the fact
score: the fraction of each event's facts (number of traces, P and S arrival times within a tolerance in seconds,
amplitude class low/medium/high, frequency class low/high) that the description states correctly, averaged over
events. Facts are read back from the text with patterns such as "3 traces", "P wave arrives at 1.2 s",
"high amplitude", "low-frequency".
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `str`): generated descriptions.
    references (`list` of `str`): one reference description per prediction.
    facts (`list` of `dict`, optional): per event, any of num_traces (int), p_arrival_s and s_arrival_s (float,
        seconds), amplitude_class ("low", "medium", "high"), frequency_class ("low", "high").
    time_tolerance (`float`, default 0.25): how far, in seconds, a stated arrival time may be from the true one.
Returns:
    bleu (`float`): corpus BLEU, 0-100.
    rouge_l (`float`): mean ROUGE-L F1, 0-1.
    fact_score (`float`): mean fraction of facts stated correctly, 0-1 (only with `facts`).
Examples:
    >>> metric = evaluate.load(llava_swap.metrics.path("description"))
    >>> metric.compute(predictions=["3 traces, P at 1.2 s"], references=["Three traces; P wave at 1.2 s."],
    ...                facts=[{"num_traces": 3, "p_arrival_s": 1.25}])["fact_score"]
    1.0
"""

_CITATION = """\
@inproceedings{papineni2002bleu,
  title={{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of the 40th Annual Meeting of the ACL},
  year={2002}
}
@inproceedings{post2018call,
  title={A Call for Clarity in Reporting {BLEU} Scores},
  author={Post, Matt},
  booktitle={Proceedings of the Third Conference on Machine Translation},
  year={2018}
}
@inproceedings{lin2004rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Description(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://github.com/mjpost/sacrebleu",
                "https://github.com/google-research/google-research/tree/master/rouge",
            ],
        )

    def _compute(self, predictions, references, facts=None, time_tolerance: float = 0.25) -> dict:
        return description_scores(predictions, references, facts=facts, time_tolerance=time_tolerance)
