"""Training steps whose IR the golden tests pin (kept in their own file so the
source lines in the printed IR stay put when tests change)."""
import gradc as torch
import gradc.nn as nn
import gradc.optim as optim


class LinearRegression(nn.Module):
    def __init__(self):
        super(LinearRegression, self).__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


def linreg():
    model = LinearRegression()
    criterion = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)

    def linreg_step(x, y):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return linreg_step, (torch.rand(100, 1), torch.rand(100, 1))


def mlp_adam():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():  # state as after a first step, so the steady-state step is traced
        optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def mlp_step(x, y):
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return mlp_step, (torch.rand(2, 4), torch.tensor([0, 2]))
