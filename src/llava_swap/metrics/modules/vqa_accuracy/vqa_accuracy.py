"""evaluate module `vqa_accuracy`: VQAv2 accuracy; a thin wrapper, the logic is `llava_swap.metrics.vqa`.

Load it offline with `evaluate.load(llava_swap.metrics.path("vqa_accuracy"))`. Imports are absolute on purpose: a
relative import makes evaluate try to download the imported file.
"""

import datasets
import evaluate

from llava_swap.metrics.vqa import vqa_accuracy

_DESCRIPTION = """\
VQA accuracy as computed by the official VQAv2 evaluation (vqaEval.py of the VQA API, HEAD): when the human answers
differ, they and the answer are normalised (lower case, punctuation, number words to digits, articles dropped,
contractions restored); when they are unanimous, only whitespace is. Then an answer
scores the mean, over each human answer left out in turn, of min(1, matching other human answers / 3). With the 10
human answers of VQAv2, 4 or more matches score 1.0, 3 score 0.9, 2 score 0.6, 1 scores 0.3. With a single reference
answer the score is exact match after normalisation. The result is the mean over questions, in [0, 1].
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `str`): one answer per question.
    references (`list` of `list` of `str`): the human answers of each question (at least one).
    normalize_unanimous (`bool`, defaults to False): normalise both sides when the humans agree unanimously too
        (not the official number).
Returns:
    accuracy (`float`): mean VQA accuracy in [0, 1].
Examples:
    >>> metric = evaluate.load(llava_swap.metrics.path("vqa_accuracy"))
    >>> metric.compute(predictions=["Two"], references=[["2"]])
    {'accuracy': 1.0}
"""

_CITATION = """\
@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and
          Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={International Conference on Computer Vision (ICCV)},
  year={2015}
}
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://visualqa.org/evaluation.html", "https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references, normalize_unanimous: bool = False) -> dict:
        return vqa_accuracy(predictions, references, normalize_unanimous=normalize_unanimous)
