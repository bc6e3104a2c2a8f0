"""Trace the seed's linear-regression training step and show its IR.

Prints the traced graph (forward, `grad` markers, SGD update) and the graph
after the reverse-mode pass, and writes both as Graphviz DOT files
(render with `dot -Tpng linreg_step.autodiff.dot -o step.png`).
"""
import sys

import gradc as torch
import gradc.nn as nn
import gradc.optim as optim


class LinearRegression(nn.Module):
    def __init__(self):
        super(LinearRegression, self).__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


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


x = torch.rand(100, 1)
y = 2 * x + 1
traced = torch.trace(linreg_step, x, y)
print("=== traced ===")
print(traced.ir("traced"))
print("=== autodiff ===")
print(traced.ir("autodiff"))
out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
for stage in ("traced", "autodiff"):
    path = f"{out_dir}/linreg_step.{stage}.dot"
    with open(path, "w") as f:
        f.write(traced.ir(stage).to_dot())
    print(f"wrote {path}")
