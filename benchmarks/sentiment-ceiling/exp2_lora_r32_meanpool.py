from pathlib import Path
# Exp 2: LoRA on all linear layers (query,key,value,attention.output.dense,intermediate.dense,output.dense), r=32 alpha=32,
# dropout 0.1; mean pooling + dropout 0.1 + linear head (trained in full); label smoothing 0.1; lr 5e-4 cosine,
# warmup 10%, batch 16, wd 0.01, 6 epochs, eval each epoch (best epoch kept).
import random
import sys
import time

import common
import peft
import torch
from transformers import AutoModel, get_cosine_schedule_with_warmup

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
EPOCHS, LR, BS, WD, WARM = 6, 5e-4, 16, 0.01, 0.1
tok, data, names = common.get_data()
torch.manual_seed(seed); random.seed(seed)
enc = AutoModel.from_pretrained(common.MODEL, add_pooling_layer=False)
cfg = peft.LoraConfig(r=32, lora_alpha=32, lora_dropout=0.1, target_modules=['query', 'key', 'value', 'dense'])
enc = peft.get_peft_model(enc, cfg)
enc.print_trainable_parameters()
head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(384, 2))
lossf = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
def logits_fn(b):
    h = enc(input_ids=b['input_ids'], attention_mask=b['attention_mask']).last_hidden_state
    return head(common.mean_pool(h, b['attention_mask']))
named = list(enc.named_parameters()) + [('head.' + n, p) for n, p in head.named_parameters()]
opt = torch.optim.AdamW(common.param_groups(named, WD), lr=LR)
ids, labels, _ = data['train']
steps = EPOCHS * ((len(ids) + BS - 1) // BS)
sch = get_cosine_schedule_with_warmup(opt, int(round(WARM * steps)), steps)
gen = random.Random(seed)
out = str(Path(__file__).parent / 'results_exp2.jsonl')
train_s = 0.0
for ep in range(1, EPOCHS + 1):
    enc.train(); head.train(); t = time.time()
    for bi in common.batches(len(ids), BS, True, gen):
        b = common.collate(tok, [ids[i] for i in bi], [labels[i] for i in bi])
        loss = lossf(logits_fn(b), b['labels'])
        loss.backward(); opt.step(); sch.step(); opt.zero_grad()
    train_s += time.time() - t
    enc.eval(); head.eval(); acc = common.evaluate(logits_fn, tok, data['eval'])
    common.log(out, {'exp': 2, 'seed': seed, 'epoch': ep, 'eval_acc': acc, 'train_s_cum': round(train_s, 1)})
