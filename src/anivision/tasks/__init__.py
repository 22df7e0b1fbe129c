"""Tasks: classification, few-shot and retrieval; each has its loss and its evaluation."""
