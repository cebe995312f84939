"""evaluate module `calibration`: ECE, adaptive ECE, Brier score and reliability bins of answer confidences; a thin
wrapper, the logic is `llava_swap.metrics.calibration`.

Load it offline with `evaluate.load(llava_swap.metrics.path("calibration"))`. Imports are absolute on purpose: a
relative import makes evaluate try to download the imported file.
"""

import datasets
import evaluate

from llava_swap.metrics.calibration import calibration

_DESCRIPTION = """\
Calibration of a model's confidences against whether its answers were right. ece: expected calibration error over
equal-width confidence bins (bin i covers (i/n, (i+1)/n], the first also 0): the bin-size-weighted mean of
|accuracy - mean confidence|. adaptive_ece: the same over equal-mass bins (answers sorted by confidence, bins of equal
size as far as possible, never splitting answers of equal confidence, so the order of the answers does not matter).
brier: mean squared difference between confidence and correctness (0/1). bins: the equal-width bins (lower, upper,
count, confidence, accuracy, gap = confidence - accuracy; None means for empty bins), the table behind a reliability
diagram.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions (`list` of `float`): confidence of each answer, in [0, 1].
    references (`list` of `int`): 1 if the answer was correct, else 0.
    n_bins (`int`, default 15): number of bins for ece, adaptive_ece and the table.
Returns:
    ece (`float`), adaptive_ece (`float`), brier (`float`), bins (`list` of `dict`).
Examples:
    >>> metric = evaluate.load(llava_swap.metrics.path("calibration"))
    >>> metric.compute(predictions=[0.9, 0.6], references=[1, 0], n_bins=10)["ece"]
    0.35
"""

_CITATION = """\
@inproceedings{naeini2015obtaining,
  title={Obtaining Well Calibrated Probabilities Using {B}ayesian Binning},
  author={Naeini, Mahdi Pakdaman and Cooper, Gregory F. and Hauskrecht, Milos},
  booktitle={AAAI Conference on Artificial Intelligence},
  year={2015}
}
@inproceedings{guo2017calibration,
  title={On Calibration of Modern Neural Networks},
  author={Guo, Chuan and Pleiss, Geoff and Sun, Yu and Weinberger, Kilian Q.},
  booktitle={International Conference on Machine Learning (ICML)},
  year={2017}
}
@inproceedings{nixon2019measuring,
  title={Measuring Calibration in Deep Learning},
  author={Nixon, Jeremy and Dusenberry, Michael W. and Zhang, Linchuan and Jerfel, Ghassen and Tran, Dustin},
  booktitle={CVPR Workshops},
  year={2019}
}
@article{brier1950verification,
  title={Verification of Forecasts Expressed in Terms of Probability},
  author={Brier, Glenn W.},
  journal={Monthly Weather Review},
  volume={78},
  number={1},
  pages={1--3},
  year={1950}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Calibration(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, n_bins: int = 15) -> dict:
        return calibration(predictions, references, n_bins=n_bins)
