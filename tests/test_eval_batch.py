"""Evaluation batches of periodic frames are capped by their neighbour-list size (a batch of 128
64-molecule water frames would need ~33 GB for its forces); free molecules keep theirs."""

import numpy as np

from stablejax.models.frames import EVAL_PAIR_BUDGET, eval_batch_size


def test_eval_batch_size_caps_neighbour_list_frames():
    assert eval_batch_size(128, None) == 128  # free molecules: as configured
    water = np.zeros((200, 192, 106), np.int32)  # dense lists of a 64-molecule box
    assert eval_batch_size(128, water) == EVAL_PAIR_BUDGET // (192 * 106) == 4
    assert eval_batch_size(2, water) == 2  # never above the request
    huge = np.zeros((3, 4000, 400), np.int32)
    assert eval_batch_size(128, huge) == 1  # at least one frame
