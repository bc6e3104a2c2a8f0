"""The seed tutorial's snippets, run with `import gradc as torch`.

Printed tensors must read as the tutorial (and PyTorch) print them; the
tutorial's own mistakes (an integer tensor with requires_grad=True, backward()
on a non-scalar) must raise PyTorch's errors, with a hint how to fix them.
"""
import numpy as np
import pytest

import gradc as torch
import gradc.nn as nn


def test_tensor_creation_and_addition_print_as_in_the_tutorial():
    x = torch.tensor([[1, 2], [3, 4]])
    assert str(x) == "tensor([[1, 2],\n        [3, 4]])"
    y = x + 1
    assert str(y) == "tensor([[2, 3],\n        [4, 5]])"


def test_integer_tensor_requiring_grad_raises_with_a_fix():
    with pytest.raises(RuntimeError, match="Only Tensors of floating point") as e:
        torch.tensor([1, 2, 3], requires_grad=True)
    assert "gradc.tensor([1., 2., 3.], requires_grad=True)" in str(e.value)


def test_backward_on_a_non_scalar_raises_with_a_fix():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    z = x * x  # noqa: F841 - as in the tutorial
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs") as e:
        y.backward()
    assert ".sum().backward()" in str(e.value)
    y.sum().backward()
    assert str(x.grad) == "tensor([2., 2., 2.])"


def test_errors_match_pytorch_wording():
    real = pytest.importorskip("torch")
    for make in (lambda t: t.tensor([1, 2, 3], requires_grad=True),
                 lambda t: (t.tensor([1.0, 2.0], requires_grad=True) * 2).backward()):
        with pytest.raises(RuntimeError) as ours:
            make(torch)
        with pytest.raises(RuntimeError) as theirs:
            make(real)
        assert str(ours.value).startswith(str(theirs.value)), (str(ours.value), str(theirs.value))


class LinearRegression(nn.Module):
    def __init__(self):
        super(LinearRegression, self).__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


def test_training_loop_of_the_tutorial_matches_pytorch():
    real = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.rand(100, 1) * 10
    y = 2 * x + 1 + torch.randn(100, 1) * 0.5
    model = LinearRegression()
    criterion = nn.MSELoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    tmodel = real.nn.Linear(1, 1)
    with real.no_grad():
        tmodel.weight.copy_(real.tensor(model.linear.weight.detach().numpy()))
        tmodel.bias.copy_(real.tensor(model.linear.bias.detach().numpy()))
    topt = real.optim.SGD(tmodel.parameters(), lr=0.01)
    tx, ty = real.tensor(x.numpy()), real.tensor(y.numpy())
    for epoch in range(200):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tloss = real.nn.functional.mse_loss(tmodel(tx), ty)
        tloss.backward()
        topt.step()
        topt.zero_grad()
        np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-4)
    np.testing.assert_allclose(model.linear.weight.detach().numpy(), tmodel.weight.detach().numpy(), rtol=1e-4)
