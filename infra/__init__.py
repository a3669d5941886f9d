"""Pulumi components of the eks-neuron-llm stack, one concern per module."""
