"""The seed tutorial's linear regression, complete and runnable.

Synthetic data y = 2x + 1 + noise, the tutorial's model, loss, optimizer and
loop, unchanged but for `import gradc as torch`. Prints the learned weight
and bias next to the true ones.
"""
import gradc as torch
import gradc.nn as nn
import gradc.optim as optim

TRUE_W, TRUE_B = 2.0, 1.0

torch.manual_seed(0)
x = torch.rand(100, 1) * 10
y = TRUE_W * x + TRUE_B + torch.randn(100, 1) * 0.5


# Define the model (as in the tutorial)
class LinearRegression(nn.Module):
    def __init__(self):
        super(LinearRegression, self).__init__()
        self.linear = nn.Linear(1, 1)

    def forward(self, x):
        return self.linear(x)


model = LinearRegression()
criterion = nn.MSELoss()
optimizer = optim.SGD(model.parameters(), lr=0.01)

for epoch in range(1000):
    y_pred = model(x)  # forward pass
    loss = criterion(y_pred, y)  # compute the loss
    loss.backward()  # backward pass
    optimizer.step()  # update the weights
    optimizer.zero_grad()  # clear the gradients
    if epoch % 200 == 0 or epoch == 999:
        print(f"epoch {epoch:4d}  loss {loss.item():.4f}")

print(f"learned weight {model.linear.weight.item():.4f}  (true {TRUE_W})")
print(f"learned bias   {model.linear.bias.item():.4f}  (true {TRUE_B})")
