import math

import pytest
import torch

from utils.lr_lambda import LambdaSyntaxError, parse_lr_lambda


@pytest.mark.parametrize(
    "source, expected",
    [
        ("lambda epoch: 0.955**epoch", lambda e: 0.955**e),
        ("lambda epoch: 0.975**epoch", lambda e: 0.975**e),
        ("lambda epoch: 0.98**epoch", lambda e: 0.98**e),
        (
            "lambda epoch: pow(0.0001/0.001, 1/67)**epoch",
            lambda e: pow(0.0001 / 0.001, 1 / 67) ** e,
        ),
        ("lambda e: max(0.1, 1 - e / 10)", lambda e: max(0.1, 1 - e / 10)),
        (
            "lambda epoch: 0.5 * (1 + cos(pi * epoch / 100))",
            lambda e: 0.5 * (1 + math.cos(math.pi * e / 100)),
        ),
    ],
)
def test_thesis_lambdas_match_python(source, expected):
    fn = parse_lr_lambda(source)
    for epoch in (0, 1, 5, 67, 150):
        assert fn(epoch) == pytest.approx(expected(epoch), rel=1e-12)


def test_geometric_lambda_meets_first_milestone():
    # Thesis 4.2.16: the learning rates of C-63 and C-50 meet at epoch 67.
    fn = parse_lr_lambda("lambda epoch: pow(0.0001/0.001, 1/67)**epoch")
    assert 0.001 * fn(67) == pytest.approx(0.0001)


@pytest.mark.parametrize(
    "source",
    [
        "lambda epoch: __import__('os').system('echo pwned')",
        "lambda epoch: (0).__class__.__bases__[0].__subclasses__()",
        "lambda epoch: open('/etc/passwd').read()",
        "lambda epoch: [x for x in range(10)]",
        "lambda epoch: epoch if epoch else 1",
        "lambda epoch: globals()",
        "lambda epoch: 'a' * 10",
        "lambda epoch, other: epoch",
        "lambda *args: 1",
        "import os",
        "0.955**epoch",
        "lambda epoch: epoch.real",
        "lambda epoch: unknown_name",
        "lambda epoch: 9.0**9**9",
        "lambda epoch: (-1)**0.5",
        "lambda epoch: 1/0",
        "lambda epoch: floor(9e300)**floor(9e300)",
        "lambda epoch: floor(1e300)*floor(1e300)*floor(1e300)",
        "lambda epoch: ceil(1e308)**2",
    ],
)
def test_rejects_everything_but_arithmetic(source):
    with pytest.raises(LambdaSyntaxError):
        parse_lr_lambda(source)


def test_works_inside_lambdalr_and_state_dict_is_plain():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, parse_lr_lambda("lambda epoch: 0.5**epoch"))
    for _ in range(3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    # A closure is not saved into the state dict, so checkpoints load with weights_only=True.
    assert sched.state_dict()["lr_lambdas"] == [None]


def test_a_negative_factor_is_refused_at_the_epoch_it_appears():
    assert parse_lr_lambda("lambda epoch: 0 * epoch")(3) == 0.0  # a zero rate is allowed
    with pytest.raises(LambdaSyntaxError, match="at epoch 0 is -1.0, not a finite number >= 0"):
        parse_lr_lambda("lambda epoch: -1")
    later = parse_lr_lambda("lambda epoch: 1 - epoch / 2")
    assert later(2) == 0.0
    with pytest.raises(LambdaSyntaxError, match="at epoch 3 is -0.5"):
        later(3)
