#!/usr/bin/env python3
"""Fails when modules of one crate import each other in a cycle (issue 25): for every crate,
the graph of `crate::module` (and `super::module`) references between its files, outside
comments and test modules, must have no strongly connected component of two or more."""
import os,re,glob,sys
sys.setrecursionlimit(10000)
bad=False
for crate in sorted(glob.glob('crates/*/src'))+['src']:
    mods={}
    for f in glob.glob(crate+'/**/*.rs',recursive=True):
        rel=os.path.relpath(f,crate)[:-3].replace('/', '::')
        if rel in ('lib','main'): continue
        if rel.endswith('::mod'): rel=rel[:-5]
        txt=open(f).read()
        i=txt.find('#[cfg(test)]')
        if i>=0: txt=txt[:i]
        txt='\n'.join(l for l in txt.splitlines() if not l.strip().startswith('//'))
        refs=set(m.group(1) for m in re.finditer(r'crate::([a-z_][a-z0-9_]*)',txt))
        if '::' in rel:
            parent=rel.rsplit('::',1)[0]
            refs|=set(parent+'::'+m.group(1) for m in re.finditer(r'super::([a-z_][a-z0-9_]*)',txt))
        mods[rel]=refs
    g={m:set(r for r in refs if r!=m and r in mods) for m,refs in mods.items()}
    idx={}; low={}; st=[]; on=set(); sccs=[]; c=[0]
    def dfs(v):
        idx[v]=low[v]=c[0]; c[0]+=1; st.append(v); on.add(v)
        for w in g.get(v,()):
            if w not in idx: dfs(w); low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop(); on.discard(w); comp.append(w)
                if w==v: break
            if len(comp)>1: sccs.append(comp)
    for v in sorted(g):
        if v not in idx: dfs(v)
    for s in sccs:
        bad=True
        print(crate, sorted(s), {m:sorted(g[m]&set(s)) for m in s})
sys.exit(1 if bad else 0)
