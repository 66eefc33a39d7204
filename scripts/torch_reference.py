"""The VAE of the Keras listing, written in PyTorch, for the benchmark only.

Same layer sizes and activations, Adam with the same step size, batch size,
dynamic binarisation, ``mc_samples`` draws of ``eps`` per example, and the
same loss: the Bernoulli negative log-likelihood from logits, summed over
pixels and averaged over samples and batch, plus the closed-form KL divergence
averaged over the batch. PyTorch is optional: nothing else imports this file.
"""

import time

import torch
from torch import nn


class TorchVAE(nn.Module):
    def __init__(self, original_dim, intermediate_dim, latent_dim, hidden_layers, activation):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        encoder, width = [], original_dim
        for _ in range(hidden_layers):
            encoder += [nn.Linear(width, intermediate_dim), act()]
            width = intermediate_dim
        self.encoder = nn.Sequential(*encoder)
        self.z_mean = nn.Linear(width, latent_dim)
        self.z_log_var = nn.Linear(width, latent_dim)
        decoder, width = [], latent_dim
        for _ in range(hidden_layers):
            decoder += [nn.Linear(width, intermediate_dim), act()]
            width = intermediate_dim
        self.decoder = nn.Sequential(*decoder, nn.Linear(width, original_dim))

    def negative_elbo(self, x, eps):
        h = self.encoder(x)
        z_mean, z_log_var = self.z_mean(h), self.z_log_var(h)
        z = z_mean.unsqueeze(1) + torch.exp(z_log_var / 2).unsqueeze(1) * eps
        x_logits = self.decoder(z)
        distortion = nn.functional.binary_cross_entropy_with_logits(
            x_logits, x.unsqueeze(1).expand_as(x_logits), reduction="none"
        ).sum(-1)
        rate = -0.5 * (1 + z_log_var - z_mean.square() - z_log_var.exp()).sum(-1)
        return distortion.mean() + rate.mean()


def train_torch_vae(
    x_train, num_epochs, batch_size, mc_samples, learning_rate, original_dim, intermediate_dim, latent_dim,
    hidden_layers, activation, seed=0,
):  # fmt: skip
    """Train; return the wall-clock and the CPU seconds of each epoch."""
    torch.manual_seed(seed)
    model = TorchVAE(original_dim, intermediate_dim, latent_dim, hidden_layers, activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-7)
    x_all = torch.from_numpy(x_train)
    seconds, cpu_seconds = [], []
    for _ in range(num_epochs):
        start, start_cpu = time.perf_counter(), time.process_time()
        order = torch.randperm(len(x_all))
        for first in range(0, len(x_all), batch_size):
            x = torch.bernoulli(x_all[order[first : first + batch_size]])
            eps = torch.randn(len(x), mc_samples, latent_dim)
            optimizer.zero_grad(set_to_none=True)
            loss = model.negative_elbo(x, eps)
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - start_cpu)
    return seconds, cpu_seconds
