"""Critics for PPO (``advantage_estimator: gae``): a value head on a Hugging Face causal LM.

Two shapes, chosen by ``AlgorithmConfig.critic``:

- ``value_head``: a linear head on the *policy's* last hidden state. One forward pass gives
  logits and values; the trunk is shared, so only the head is new. ``Critic.parameters()`` is
  the head alone (the policy optimiser already owns the trunk); add ``value_coef * value_loss``
  to the policy loss.
- ``separate``: a copy of the base architecture with its own head and its own optimiser
  (TinyZero/verl: ``critic.model.path = base model``). ``Critic.parameters()`` is everything.

Alignment: ``values[:, i]`` is the value of the state after tokens ``0..i`` -- the same position
whose logits predict token ``i + 1``. Slice values exactly like the log-probs.

Saving: the LM goes to ``model_dir`` with ``save_pretrained``; the head goes *beside* it, to
``value_head_path(model_dir)``, so ``model_dir`` stays a plain HF directory (vLLM loads every
``*.safetensors`` file it finds in a model directory).

Example:
    >>> from transformers import AutoModelForCausalLM, Qwen2Config
    >>> cfg = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                   num_attention_heads=4, num_key_value_heads=2)
    >>> policy = AutoModelForCausalLM.from_config(cfg)
    >>> critic = make_critic(policy, "value_head")
    >>> ids = torch.tensor([[1, 2, 3]]); attn = torch.ones_like(ids)
    >>> logits, values = critic.model(ids, attn)
    >>> tuple(logits.shape), tuple(values.shape), len(list(critic.parameters()))
    ((1, 3, 64), (1, 3), 2)
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterator, Literal

import torch
from safetensors.torch import load_file, save_file

CriticKind = Literal["value_head", "separate"]


def value_head_path(model_dir: str | Path) -> Path:
    """Where the head of the model saved in ``model_dir`` lives: a sibling file.

    >>> value_head_path("results/run/grpo/model").as_posix()
    'results/run/grpo/model.value_head.safetensors'
    """
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + ".value_head.safetensors")


class ValueHead(torch.nn.Module):
    """A causal LM plus a linear value head on its final (normalised) hidden state.

    The head starts at zero, so every initial value is 0: GAE then starts as Monte-Carlo
    returns instead of noise from a random projection.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        hidden_size = model.config.hidden_size
        self.value_head = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(model.parameters()).device)

    def _hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # base_model is the decoder without the LM head (Qwen2Model for Qwen2ForCausalLM).
        return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def _values(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()  # (B, L)

    def values_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 values (B, T) from trunk hidden states (B, T, H) computed elsewhere, e.g. the
        policy's own pass that also gives the log-probs."""
        return self._values(hidden)

    def completion_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          num_completion_tokens: int) -> torch.Tensor:
        """Values (B, T) of the states that predict the last ``num_completion_tokens`` tokens,
        with the same left-padding position ids as the policy's log-probs."""
        from stages.core.modeling import completion_hidden_states

        return self._values(completion_hidden_states(self.model, input_ids, attention_mask, num_completion_tokens))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, L, V), values (B, L)) from one pass through the trunk."""
        hidden = self._hidden(input_ids, attention_mask)  # (B, L, H)
        logits = self.model.get_output_embeddings()(hidden)  # (B, L, V)
        return logits, self._values(hidden)

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Values only (B, L); skips the vocabulary projection."""
        return self._values(self._hidden(input_ids, attention_mask))

    def save_pretrained(self, model_dir: str | Path) -> None:
        """The LM to ``model_dir`` (HF format), the head to ``value_head_path(model_dir)``."""
        self.model.save_pretrained(model_dir)
        self.save_head(value_head_path(model_dir))

    def save_head(self, path: str | Path) -> None:
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.value_head.state_dict().items()}
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)  # atomic: an interrupted save never leaves a half-written head

    def load_head(self, path: str | Path) -> None:
        state = load_file(str(path), device=str(self.value_head.weight.device))
        self.value_head.load_state_dict(state)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, **model_kwargs) -> "ValueHead":
        """Load the LM from ``model_dir`` and its head from beside it (a zero head if none)."""
        from transformers import AutoModelForCausalLM

        wrapped = cls(AutoModelForCausalLM.from_pretrained(model_dir, **model_kwargs))
        head_file = value_head_path(model_dir)
        if head_file.exists():
            wrapped.load_head(head_file)
        return wrapped


class Critic:
    """What the PPO loop needs from a critic: values, trainable parameters, save/load."""

    def __init__(self, model: ValueHead, kind: CriticKind) -> None:
        self.model = model
        self.kind = kind

    @property
    def shares_policy_trunk(self) -> bool:
        return self.kind == "value_head"

    def values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) values, aligned with the logits (see the module docstring)."""
        return self.model.values(input_ids, attention_mask)

    def completion_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          num_completion_tokens: int) -> torch.Tensor:
        """(B, T) values aligned with the completion log-probs (``ValueHead.completion_values``)."""
        return self.model.completion_values(input_ids, attention_mask, num_completion_tokens)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """Parameters for the critic's optimiser: the head alone when the trunk is the policy's."""
        if self.shares_policy_trunk:
            return self.model.value_head.parameters()
        return self.model.parameters()

    def train(self, mode: bool = True) -> "Critic":
        self.model.train(mode)
        return self

    def save(self, model_dir: str | Path) -> None:
        """Shared trunk: only the head (beside the policy saved in ``model_dir``). Separate:
        the critic LM into ``model_dir`` and its head beside it."""
        if self.shares_policy_trunk:
            self.model.save_head(value_head_path(model_dir))
        else:
            self.model.save_pretrained(model_dir)


def make_critic(
    policy_model: torch.nn.Module,
    kind: CriticKind,
    *,
    base_model_dir: str | Path | None = None,
    gradient_checkpointing: bool = False,
    **model_kwargs,
) -> Critic:
    """Build the critic for a policy.

    ``value_head``: a head on ``policy_model`` itself. ``separate``: a new model with the base
    architecture -- loaded from ``base_model_dir`` when given (TinyZero starts the critic from the
    base model), otherwise a deep copy of ``policy_model`` (identical to the base at step 0).
    ``base_model_dir`` is ignored by ``value_head``; ``gradient_checkpointing`` applies to a
    separate trunk (a value head's trunk is the policy, configured where it is loaded).
    """
    if kind == "value_head":
        return Critic(ValueHead(policy_model), kind)
    if kind == "separate":
        if base_model_dir is not None:
            from transformers import AutoModelForCausalLM

            trunk = AutoModelForCausalLM.from_pretrained(base_model_dir, **model_kwargs)
            trunk.to(next(policy_model.parameters()).device)
        else:
            trunk = copy.deepcopy(policy_model)
        if gradient_checkpointing:
            from stages.core.modeling import enable_gradient_checkpointing

            enable_gradient_checkpointing(trunk)
            trunk.train()
        return Critic(ValueHead(trunk), kind)
    raise ValueError(f"critic: unknown kind {kind!r}; choose 'value_head' or 'separate'")
