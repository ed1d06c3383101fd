/*
 * slot.pml — the slot protocol of src/table/table.cpp (claim / publish / update /
 * reclaim / repair), for the SPIN model checker. doc/model.md maps every
 * step below to the C++ statement that does it, and says what is and is not
 * modelled. Check it with scripts/model.sh.
 *
 * The world: N slots forming one probe window (every key's home is slot 0,
 * the worst case: all keys compete for the same slots), NPROC worker
 * processes, each making OPS decisions on a key chosen among KEYS, and at
 * most KILLS of them killed (SIGKILL) at any step. After every worker has
 * finished or died, an auditor does what `shmlimit check` does (repair the
 * slots of dead owners) and checks that every slot is usable.
 *
 * Properties (assertions; pan -DSAFETY also reports deadlocks as invalid
 * end states):
 *   P1 no duplicates: no two slots are visible (LIVE, version == generation)
 *      with the same key, at any moment                         (monitor)
 *   P2 no stale update lands on another generation: a decision's CAS that
 *      succeeds lands on the slot generation and key it read     (update)
 *   P3 kill safety: after the survivors and the auditor's repair, no slot
 *      is left unusable: owner free, not CLAIMING, word version equal to
 *      the meta's generation                                      (auditor)
 *   P4 no wait cycle: no process waits forever (pan: invalid end state)
 *
 * Version wrap (ABA): the C++ word keeps version = generation mod 256. Here
 * the version is generation mod V (V = 4) and a slot's generation is capped
 * at MAXGEN. With MAXGEN < V (the default) no version repeats during a run:
 * that is the assumption "fewer than 256 reclaims of one slot during one
 * decision's read-to-CAS window". -DWRAP sets MAXGEN >= V: SPIN then finds
 * the stale CAS that lands on a later key (P2), showing the assumption is
 * needed when payloads can repeat (payloads here are a counter mod PMOD).
 *
 * Memory model: SPIN interleaves whole statements (sequential consistency).
 * A meta, word or owner access is one step, as the C++ 64-bit atomics are;
 * the C++ orderings (release/acquire, the seq_cst fence of the re-scan) are
 * argued in table.cpp and are what make its loads and stores behave so.
 */

#ifndef N
#define N 2          /* slots in the probe window */
#endif
#ifndef NPROC
#define NPROC 2      /* worker processes */
#endif
#ifndef KEYS
#define KEYS 2       /* keys 1..KEYS; 0 = no key */
#endif
#ifndef OPS
#define OPS 1        /* decisions per worker */
#endif
#ifndef OPS1
#define OPS1 OPS     /* decisions of worker 1 (the mortal one) */
#endif
#ifndef KILLS
#define KILLS 1      /* workers that may be killed: 0 or 1 (worker 1) */
#endif
#ifdef WRAP
#define V 2          /* version = generation mod 2: two reclaims bring a version back */
#define MAXGEN 3     /* generations 0..3: versions repeat, the ABA counterexample is reachable */
#else
#define V 4          /* version = generation mod V (the C++ uses mod 256) */
#define MAXGEN 3     /* generations 0..3 < V: versions never repeat */
#endif
#define PMOD 2       /* payload: a counter mod 2, so payloads do repeat */

#define EMPTY    0
#define CLAIMING 1
#define LIVE     2
#define DEAD     3

#define AUDITOR  (NPROC + 1)  /* owner token of the auditor */

/* meta = (st, mkey, mgen); word = (wver, wpay); owner; kb = the key bytes */
byte st[N];
byte mkey[N];
byte mgen[N];
byte wver[N];
byte wpay[N];
byte owner[N];
byte kb[N];

bool alive[NPROC + 2];
byte finished = 0;

#define VIS(i) (st[i] == LIVE && wver[i] == mgen[i] % V)
#define SAME_META(i, s, k, g) (st[i] == s && mkey[i] == k && mgen[i] == g)

/* A SIGKILL may land here: the worker stops for good. Only worker 1 is
   mortal (KILLS=1; the workers are symmetric, so which one dies does not
   matter), and the choice reads only locals, which keeps SPIN's partial
   order reduction effective. */
#define STEP \
  if \
  :: mortal -> alive[me] = 0; goto die \
  :: true -> skip \
  fi

/* table.cpp Table::repair_if_dead. `rep` = whether a repair was made. */
inline repair_if_dead(i, rep) {
  rep = 0;
  atomic {
    /* owner.load; token_is_dead; owner CAS dead -> me */
    if
    :: (owner[i] != 0 && !alive[owner[i]]) -> owner[i] = me; rep = 1
    :: else -> skip
    fi
  }
  if
  :: rep ->
    STEP;
    d_step {
      /* meta/word as the dead owner left them */
      if
      :: st[i] == CLAIMING -> st[i] = DEAD; mkey[i] = 0           /* died writing the key */
      :: st[i] != CLAIMING && st[i] != EMPTY && wver[i] == (mgen[i] + 1) % V ->
           st[i] = DEAD; mkey[i] = 0; mgen[i] = mgen[i] + 1       /* died after a committed reclaim */
#ifndef BUG_EMPTY_REPAIR
      :: st[i] == EMPTY && wver[i] == (mgen[i] + 1) % V ->
           st[i] = DEAD; mkey[i] = 0; mgen[i] = mgen[i] + 1       /* died after committing an EMPTY slot */
#endif
      :: else -> skip                                              /* consistent: only the token */
      fi
    }
    STEP;
    owner[i] = 0
  :: else -> skip
  fi
}

/* table.cpp Table::wait_change: until slot i no longer shows meta (s,k,g);
   a dead owner is repaired. No timeout (C++: claim_timeout), so a wait that
   could last forever is a deadlock SPIN reports (P4). */
inline wait_change(i, s, k, g) {
  do
  :: !SAME_META(i, s, k, g) -> break
  :: (owner[i] != 0 && !alive[owner[i]]) ->
       repair_if_dead(i, rep);
       if :: rep -> break :: else -> skip fi
  od
}

/* table.cpp Table::match on LIVE slot i read as (LIVE, k', g) where k' == k
   (identity): the seqlock read of key bytes and word, then meta again.
   res: 0 no, 1 yes (wv/wp = the word), 2 changed. */
inline match(i, g, k, res) {
  lkb = kb[i];                                   /* key_equal: relaxed key loads */
  d_step { wv = wver[i]; wp = wpay[i] }          /* word.load(acquire) */
  if                                              /* meta re-read after the fence */
  :: !SAME_META(i, LIVE, k, g) -> res = 2
  :: else ->
     if
     :: lkb != k -> res = 0
     :: lkb == k && wv != g % V -> res = 0        /* a committed reclaim: the key is leaving */
     :: lkb == k && wv == g % V -> res = 1
     fi
  fi
}

/* table.cpp Table::withdraw */
inline withdraw(i, g) {
  d_step { st[i] = DEAD; mkey[i] = 0; mgen[i] = g };
  STEP;
  owner[i] = 0
}

proctype worker(byte me) {
  bool mortal = (me == 1 && KILLS > 0);
  byte op = 0, k, d, i, cand, cand_d, cs, ck, cg, s2, k2, g2, gen, lkb, wv, wp, res, lwv, lwp;
  bool have_cand, restart, withdrawn, rep, ok, any;

next_op:
  if
  :: (me == 1 && op == OPS1) || (me != 1 && op == OPS) -> goto done
  :: else -> op++
  fi;
  /* a key for this decision */
  if
  :: k = 1
  :: KEYS > 1 -> k = 2
  fi;

  /* ---- Table::find: probe from home (slot 0) until the key or EMPTY */
find:
  d = 0;
  do
  :: d == N -> goto claim
  :: d < N ->
     STEP;
     d_step { s2 = st[d]; k2 = mkey[d]; g2 = mgen[d] };   /* meta.load(acquire) */
     if
     :: s2 == EMPTY -> goto claim                         /* end of the sequence */
     :: s2 == LIVE && k2 == k ->
        match(d, g2, k, res);
        if
        :: res == 1 -> i = d; gen = g2; goto update
        :: res == 2 -> skip                               /* changed: look again */
        :: res == 0 -> d++
        fi
     :: else -> d++
     fi
  od;

  /* ---- Table::claim */
claim:
  /* 1. scan the window: the key, or the first usable slot */
  have_cand = 0; restart = 0; any = 0;
  d = 0;
  do
  :: d == N || restart -> break
  :: d < N && !restart ->
     STEP;
     d_step { s2 = st[d]; k2 = mkey[d]; g2 = mgen[d] };
     if
     :: s2 == EMPTY ->
        if :: !have_cand && g2 < MAXGEN -> cand = d; cand_d = d; cs = s2; ck = k2; cg = g2; have_cand = 1
           :: else -> skip fi;
        break
     :: s2 == DEAD ->
        if :: !have_cand && g2 < MAXGEN -> cand = d; cand_d = d; cs = s2; ck = k2; cg = g2; have_cand = 1
           :: else -> skip fi;
        d++
     :: s2 == CLAIMING ->
        if
        :: k2 == k -> wait_change(d, s2, k2, g2); restart = 1   /* someone inserts our key */
        :: else -> any = 1; d++
        fi
     :: s2 == LIVE ->
        if
        :: k2 == k ->
           match(d, g2, k, res);
           if
           :: res == 1 -> i = d; gen = g2; goto update         /* kFound */
           :: res == 2 -> restart = 1
           :: res == 0 -> skip
           fi
        :: else -> res = 0
        fi;
        if
        :: res == 0 && !have_cand && g2 < MAXGEN ->
           STEP;
           /* word.load: version matches and the bucket is full (is_full: any
              bucket may have refilled by now, so either answer) */
           if
           :: wver[d] == g2 % V -> cand = d; cand_d = d; cs = s2; ck = k2; cg = g2; have_cand = 1
           :: true -> skip
           fi
        :: else -> skip
        fi;
        if :: !restart -> d++ :: else -> skip fi
     fi
  od;
  if :: restart -> goto claim :: else -> skip fi;
  if
  :: !have_cand ->
     /* before calling the table full, free what dead processes left */
     d = 0; any = 0;
     do
     :: d == N -> break
     :: d < N -> STEP; repair_if_dead(d, rep); any = any || rep; d++
     od;
     if
     :: any -> goto claim
     :: else -> goto next_op                               /* kFull: on_full, no slot */
     fi
  :: else -> skip
  fi;

  /* 2. take the candidate's token and commit to it */
  STEP;
  atomic {
    if
    :: owner[cand] == 0 -> owner[cand] = me; ok = 1       /* owner CAS 0 -> me */
    :: else -> ok = 0
    fi
  }
  if
  :: !ok -> STEP; repair_if_dead(cand, rep); goto claim
  :: else -> skip
  fi;
  STEP;
  if                                                       /* meta unchanged? */
  :: !SAME_META(cand, cs, ck, cg) -> owner[cand] = 0; goto claim
  :: else -> skip
  fi;
  STEP;
  d_step { lwv = wver[cand]; lwp = wpay[cand] };          /* word.load(acquire) */
  if
  :: lwv != cg % V -> owner[cand] = 0; goto claim          /* a commit in progress or done */
  :: cs == LIVE -> if :: true -> skip :: true -> owner[cand] = 0; goto claim fi   /* still full? */
  :: else -> skip
  fi;
  gen = cg + 1;
  STEP;
  /* commit point: CAS the word (g, payload) -> (g+1, fresh payload) */
  d_step {
    if
    :: wver[cand] == lwv && wpay[cand] == lwp -> wver[cand] = gen % V; ok = 1
    :: else -> ok = 0
    fi
  }
  if
  :: ok -> if :: wpay[cand] = 0 :: wpay[cand] = 1 fi       /* fresh_payload: any value */
  :: else -> owner[cand] = 0; goto claim
  fi;
  STEP;
  d_step { st[cand] = CLAIMING; mkey[cand] = k; mgen[cand] = gen };   /* meta = CLAIMING(g+1) */
  STEP;
  kb[cand] = k;                                            /* write_key */

  /* 3. re-scan for a rival claim or copy of the key (after the seq_cst fence) */
  withdrawn = 0;
  d = 0;
  do
  :: d == N || withdrawn -> break
  :: d < N && !withdrawn && d == cand_d -> d++
  :: d < N && !withdrawn && d != cand_d ->
     STEP;
     d_step { s2 = st[d]; k2 = mkey[d]; g2 = mgen[d] };
     if
     :: s2 == EMPTY -> d = N                                /* end of the sequence */
     :: s2 != EMPTY && (k2 != k || s2 == DEAD) -> d++
     :: s2 == LIVE && k2 == k ->
        match(d, g2, k, res);
        if
        :: res == 1 -> withdraw(cand, gen); i = d; gen = g2; goto update   /* the key exists */
        :: res == 0 -> d++
        :: res == 2 -> skip                                 /* look at slot d again */
        fi
     :: s2 == CLAIMING && k2 == k ->
        if
        :: d < cand_d ->                                    /* nearer home: it wins */
           withdraw(cand, gen); withdrawn = 1;
           wait_change(d, s2, k2, g2)
        :: else ->
           wait_change(d, s2, k2, g2)                       /* farther: wait, then look again */
        fi
     fi
  od;
  if :: withdrawn -> goto claim :: else -> skip fi;

  /* 4. publish: meta = LIVE (release), then free the token */
  STEP;
  d_step { st[cand] = LIVE };
#ifndef BUG_CLAIM_WORD
  d_step { wv = wver[cand]; wp = wpay[cand] };             /* the word, read while the token is ours */
  STEP;
  owner[cand] = 0;
#else
  STEP;
  owner[cand] = 0;
  STEP;
  d_step { wv = wver[cand]; wp = wpay[cand] };             /* SlotRef{cand, live, word.load()} after the token is freed */
#endif
  i = cand;
  /* fall through: the decision's update */

  /* ---- Limiter decide: CAS the word from exactly the value read */
update:
  STEP;
  d_step {
    if
    :: wver[i] == wv && wpay[i] == wp ->
       /* P2: the CAS lands on the generation and key it was prepared for */
       assert(mgen[i] == gen && mkey[i] == k && st[i] == LIVE && kb[i] == k);
       wpay[i] = (wp + 1) % PMOD; ok = 1
    :: else -> ok = 0; lwv = wver[i]; lwp = wpay[i]
    fi
  }
  if
  :: ok -> goto next_op
  :: !ok && lwv == wv -> wp = lwp; goto update              /* lost a race: retry with the fresh word */
  :: else -> goto find                                      /* reclaimed: look the key up again */
  fi;

die:
done:
  finished++
}

/* P1: never two visible slots with one key. */
active proctype monitor() {
end:
  atomic {
    ((VIS(0) && VIS(1) && mkey[0] == mkey[1])
#if N > 2
     || (VIS(0) && VIS(2) && mkey[0] == mkey[2])
     || (VIS(1) && VIS(2) && mkey[1] == mkey[2])
#endif
    ) -> assert(false)
  }
}

/* P3: after everyone is done, `shmlimit check` (repair) leaves every slot usable. */
active proctype auditor() {
  byte me = AUDITOR, i;
  bool rep, mortal = 0;
  (finished == NPROC);
  i = 0;
  do
  :: i == N -> break
  :: i < N -> repair_if_dead(i, rep); i++
  od;
  i = 0;
  do
  :: i == N -> break
  :: i < N ->
     assert(owner[i] == 0 && st[i] != CLAIMING && wver[i] == mgen[i] % V);
     i++
  od;
die:   /* the auditor is never killed (mortal = 0); the label satisfies the macro */
  skip
}

init {
  byte p;
  atomic {
    alive[AUDITOR] = 1;
    p = 1;
    do
    :: p <= NPROC -> alive[p] = 1; run worker(p); p++
    :: p > NPROC -> break
    od
  }
}
