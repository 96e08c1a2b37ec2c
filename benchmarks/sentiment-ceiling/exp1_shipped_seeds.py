from pathlib import Path
# Exp 1: shipped recipe (configs/sentiment-lora.yaml) as plain torch + PEFT, one training seed per run.
import math
import random
import sys
import time

import common
import peft
import torch
from transformers import AutoModelForSequenceClassification, get_cosine_schedule_with_warmup

seed = int(sys.argv[1])
EPOCHS, LR, BS, WD, WARM = 3, 3e-4, 16, 0.01, 0.1
tok, data, names = common.get_data()
torch.manual_seed(seed); random.seed(seed)
model = AutoModelForSequenceClassification.from_pretrained(common.MODEL, num_labels=2)
cfg = peft.LoraConfig(task_type='SEQ_CLS', r=8, lora_alpha=16, lora_dropout=0.1,
                      target_modules=['query', 'key', 'value', 'output.dense', 'intermediate.dense'],
                      modules_to_save=['pooler', 'classifier'])
model = peft.get_peft_model(model, cfg)
model.print_trainable_parameters()
opt = torch.optim.AdamW(common.param_groups(model.named_parameters(), WD), lr=LR)
ids, labels, _ = data['train']
steps = EPOCHS * ((len(ids) + BS - 1) // BS)
sch = get_cosine_schedule_with_warmup(opt, math.ceil(WARM * steps) if False else int(round(WARM * steps)), steps)
gen = random.Random(seed)
logits_fn = lambda b: model(**b).logits
out = str(Path(__file__).parent / 'results_exp1.jsonl')
train_s = 0.0
for ep in range(1, EPOCHS + 1):
    model.train(); t = time.time()
    for bi in common.batches(len(ids), BS, True, gen):
        b = common.collate(tok, [ids[i] for i in bi], [labels[i] for i in bi])
        loss = model(**b).loss
        loss.backward(); opt.step(); sch.step(); opt.zero_grad()
    train_s += time.time() - t
    model.eval(); acc = common.evaluate(logits_fn, tok, data['eval'])
    common.log(out, {'exp': 1, 'seed': seed, 'epoch': ep, 'eval_acc': acc, 'train_s_cum': round(train_s, 1)})
