"""A user's own balancing method: a soft maximum of the task losses.

``total = T * log(sum_t exp(L_t / T))``: with a large temperature ``T`` close to the sum of the losses
(plus a constant), with a small one close to the largest loss, so the task that is behind gets the
most weight (``w_t = softmax(L / T)_t``).  ``temperature`` is declared as a hyperparameter, so a space
can search it: ``temperature: {loguniform: [0.1, 10.0]}``.
"""

import torch

from mtlsearch.balancing import HParam, LossBalancing, Range


class SoftMaxWeighting(LossBalancing):
    temperature = HParam(1.0, Range(gt=0), "softness of the maximum")  # a float > 0, default 1.0

    def forward(self, losses):
        return self.temperature * torch.logsumexp(losses / self.temperature, dim=0)
