"""``mimlens study``: the paper's study — models in roles, analysed, probed and fine-tuned, the findings judged by
role — on any models and data, as stages run in child processes and reused when finished."""
