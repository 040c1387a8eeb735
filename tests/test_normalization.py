import pytest
import torch

from datasets.normalization import compute_normalization_params
from datasets.preprocessing import Preprocessing
from datasets.stanford_data import StanfordCarsDataset


@pytest.mark.parametrize("grayscale", [False, True])
def test_params_match_a_direct_computation(prepared_data, grayscale):
    params = compute_normalization_params(
        prepared_data, image_size=[24, 24], grayscale=grayscale, batch_size=5
    )
    dataset = StanfordCarsDataset(
        prepared_data, "train", Preprocessing(image_size=(24, 24), grayscale=grayscale)
    )
    stacked = torch.stack([dataset[i][0] for i in range(len(dataset))])
    dims = (0, 2, 3)
    assert params["mean"] == pytest.approx(stacked.mean(dim=dims).tolist(), abs=1e-4)
    assert params["std"] == pytest.approx(stacked.std(dim=dims, unbiased=False).tolist(), abs=1e-4)
    assert len(params["mean"]) == (1 if grayscale else 3)
