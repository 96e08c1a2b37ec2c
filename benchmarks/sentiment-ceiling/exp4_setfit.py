from pathlib import Path
# Exp 4: SetFit-style. Contrastive fine-tuning of the sentence embedding (mean pooling, L2-normalised as in
# all-MiniLM-L6-v2) with CosineSimilarityLoss = MSE(cos(u,v), y), y=1 same label / 0 different label.
# 10,000 pairs from the 1,000 training examples (5,000 same-label + 5,000 different-label, random, seeded),
# 1 epoch, lr 2e-5 AdamW wd 0.01, linear warmup 10% + linear decay, batch 16 pairs.
# Then sklearn LogisticRegression (defaults, max_iter 2000) on the tuned embeddings of the 1,000 training rows.
# Probe (LR) accuracy is also measured before training and at the half-way point.
import random
import sys
import time

import common
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, get_linear_schedule_with_warmup

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 42
NPAIRS = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
EPOCHS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
LR, BS, WD, WARM = 2e-5, 16, 0.01, 0.1
tok, data, names = common.get_data()
torch.manual_seed(seed)
rng = random.Random(seed)
enc = AutoModel.from_pretrained(common.MODEL, add_pooling_layer=False)
ids, labels, _ = data['train']
by = {c: [i for i, l in enumerate(labels) if l == c] for c in (0, 1)}
pairs = []
while len([p for p in pairs if p[2] == 1.0]) < NPAIRS // 2:
    c = rng.choice((0, 1)); i, j = rng.sample(by[c], 2); pairs.append((i, j, 1.0))
while len(pairs) < NPAIRS:
    pairs.append((rng.choice(by[0]), rng.choice(by[1]), 0.0))

def embed(idl):
    b = common.collate(tok, idl)
    h = enc(input_ids=b['input_ids'], attention_mask=b['attention_mask']).last_hidden_state
    return torch.nn.functional.normalize(common.mean_pool(h, b['attention_mask']), dim=-1)

@torch.no_grad()
def probe():
    enc.eval()
    E = {}
    for s in ('train', 'eval'):
        x = data[s][0]
        E[s] = torch.cat([embed(x[i:i+128]) for i in range(0, len(x), 128)]).numpy()
    clf = LogisticRegression(max_iter=2000).fit(E['train'], data['train'][1])
    return float((clf.predict(E['eval']) == np.array(data['eval'][1])).mean())

out = str(Path(__file__).parent / 'results_exp4.jsonl')
tag = {'exp': 4, 'seed': seed, 'pairs': NPAIRS, 'epochs': EPOCHS}
common.log(out, {**tag, 'epoch': 0.0, 'eval_acc': probe(), 'train_s_cum': 0.0})
opt = torch.optim.AdamW(common.param_groups(enc.named_parameters(), WD), lr=LR)
nb = (len(pairs) + BS - 1) // BS
steps = EPOCHS * nb
sch = get_linear_schedule_with_warmup(opt, int(round(WARM * steps)), steps)
train_s = 0.0
for ep in range(EPOCHS):
    rng.shuffle(pairs)
    enc.train(); t = time.time()
    for k in range(nb):
        pb = pairs[k*BS:(k+1)*BS]
        e = embed([ids[i] for i, _, _ in pb] + [ids[j] for _, j, _ in pb])
        u, v = e[:len(pb)], e[len(pb):]
        loss = torch.nn.functional.mse_loss((u * v).sum(-1), torch.tensor([y for _, _, y in pb]))
        loss.backward(); opt.step(); sch.step(); opt.zero_grad()
        if k + 1 == nb // 2 or k + 1 == nb:
            train_s += time.time() - t
            common.log(out, {**tag, 'epoch': round(ep + (k + 1) / nb, 2), 'eval_acc': probe(), 'train_s_cum': round(train_s, 1), 'loss': round(loss.item(), 4)})
            enc.train(); t = time.time()
