/* SPDX-License-Identifier: MIT */
/*
 * The fault handler threads: one per CPU, pinned, blocking in read(2) on
 * the runtime's userfaultfd and passing each message to fault.c; parking
 * the ones that serve almost no faults; and the guard that decides their
 * scheduling priority (UPG_IDLE_HANDLERS).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime.h"

#define MSG_BATCH 16
#define PARK_WINDOW 1024    /* faults between two looks at our share */
#define PARK_SHARE 32	    /* park below 1/32 of the faults */
#define PARK_NS 50000000ULL /* then look again after 50 ms */
#define SAMPLE_EVERY 256    /* faults between two faulter-CPU samples */

/* ------------------------------------------------------------------ */
/* Parking idle handlers                                               */
/* ------------------------------------------------------------------ */

/*
 * Every fault wakes every handler blocked in read() on the userfaultfd (its
 * wait queue is not exclusive); the handler on the faulter's CPU wins and
 * the others go back to sleep inside the kernel, having preempted whatever
 * ran on their CPU (the evictor, another program thread) for nothing. A
 * handler that serves almost no faults therefore parks: it waits on a
 * condition variable instead of reading, for 50 ms at a time. Active
 * handlers sample the CPU of faulting threads and wake the parked handler
 * of that CPU at once. At least one handler always reads.
 */

static uint64_t total_served(struct upg *u)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < u->nhandlers; i++)
		t += atomic_load_explicit(&u->handlers[i].served,
					  memory_order_relaxed);
	return t;
}

static void park(struct upg_handler *h)
{
	struct upg *u = h->u;
	struct timespec ts;

	upg_deadline(&ts, PARK_NS);
	pthread_mutex_lock(&u->park_lock);
	atomic_store(&h->parked, true);
	while (atomic_load(&h->parked) && !atomic_load(&u->stopping))
		if (pthread_cond_timedwait(&u->park_cond, &u->park_lock, &ts))
			break;
	atomic_store(&h->parked, false);
	atomic_fetch_add(&u->active_handlers, 1);
	pthread_mutex_unlock(&u->park_lock);
	h->seen_total = total_served(u);
	h->seen_served = atomic_load(&h->served);
}

/* After handling messages: park if our share of faults is tiny. */
static void maybe_park(struct upg_handler *h)
{
	struct upg *u = h->u;
	uint64_t total = total_served(u), dt = total - h->seen_total;
	uint64_t mine = atomic_load(&h->served) - h->seen_served;
	unsigned active = atomic_load(&u->active_handlers);

	if (dt < PARK_WINDOW)
		return;
	h->seen_total = total;
	h->seen_served += mine;
	if (mine * PARK_SHARE >= dt || active < 2 ||
	    !atomic_compare_exchange_strong(&u->active_handlers, &active,
					    active - 1))
		return;
	park(h);
}

/* The CPU a thread of ours last ran on, from /proc; -1 if unknown. */
static int thread_cpu(uint32_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd, field = 2;

	snprintf(path, sizeof(path), "/proc/self/task/%u/stat", tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold anything */
	while (p && *p && field < 39)
		if (*p++ == ' ')
			field++;
	return p && *p ? atoi(p) : -1;
}

/* Now and then: is the faulting thread on a parked handler's CPU? */
void upg_handler_sample(struct upg_handler *h, uint32_t tid)
{
	struct upg *u = h->u;
	int cpu;

	if (atomic_load_explicit(&h->served, memory_order_relaxed) %
		    SAMPLE_EVERY ||
	    !tid || atomic_load(&u->active_handlers) == u->nhandlers)
		return;
	cpu = thread_cpu(tid);
	for (unsigned i = 0; i < u->nhandlers && cpu >= 0; i++) {
		if (u->handlers[i].cpu != cpu ||
		    !atomic_load(&u->handlers[i].parked))
			continue;
		pthread_mutex_lock(&u->park_lock);
		atomic_store(&u->handlers[i].parked, false);
		pthread_cond_broadcast(&u->park_cond);
		pthread_mutex_unlock(&u->park_lock);
	}
}

/* ------------------------------------------------------------------ */
/* Handler priority: the guard (UPG_IDLE_HANDLERS=auto)                */
/* ------------------------------------------------------------------ */

/*
 * Every fault wakes every handler reading the userfaultfd. At normal
 * priority the one on another CPU preempts whatever runs there, only to
 * find the message taken: with a faulting thread on each CPU that halves
 * their gain. An idle (SCHED_IDLE) handler runs only when its CPU has
 * nothing else to do, which is exactly when its own CPU's faulting thread
 * waits; the price is that it starves while other work keeps its CPU busy
 * (another program, more runnable threads than CPUs, the evictor), and the
 * program's faults wait with it.
 *
 * So in auto mode the handlers run idle while a normal-priority guard
 * thread checks, every GUARD_TICK_NS while faults flow, how long an idle
 * thread waits for each handler's CPU: it wakes a canary, an idle thread
 * pinned there, and reads at the next tick when it ran. A canary that has
 * not run after a whole tick, or ran late (GUARD_LATE_NS) twice in a row,
 * means idle handlers may starve there. Busy CPUs are not proof: the
 * program's own faulting threads keep them busy too, and those wait for
 * the handlers, which then serve them as fast idle (faster: a raised
 * handler woken for the other CPU's fault preempts the evictor there; two
 * threads on two CPUs ran 1.2-1.3x as fast idle). So the guard tries both:
 * GUARD_TRIAL_NS raised, then as long idle, and compares the faults served.
 * If idle serves 9/10 as many, the handlers stay idle and the canaries are
 * not heeded for a quiet time (1 s, doubling while idle keeps winning, up
 * to 64 s); otherwise every handler is raised to normal priority for a
 * hold time that doubles each time raised wins again, so a machine that
 * stays busy with other work pays a few tenths of a second a minute at
 * most. Raising a thread out of SCHED_IDLE needs CAP_SYS_NICE (or
 * RLIMIT_NICE); without it auto means normal priority.
 */
#define GUARD_TICK_NS 4000000ULL	/* look every 4 ms while faults flow */
#define GUARD_QUIET_NS 20000000ULL	/* every 20 ms when none do */
#define GUARD_LATE_NS 250000ULL		/* an idle thread waited too long */
#define GUARD_HOLD_MIN_NS 1000000000ULL /* normal for 1 s at first */
#define GUARD_HOLD_MAX_NS 64000000000ULL
#define GUARD_TRIAL_NS 50000000ULL /* each priority's trial: 50 ms */
#define GUARD_WIN_NUM 9		   /* idle wins at 9/10 of the raised rate */
#define GUARD_WIN_DEN 10

struct upg_canary {
	struct upg *u;
	pthread_t thread;
	int cpu;
	_Atomic uint32_t sent;	   /* probes sent (futex word) */
	_Atomic uint32_t answered; /* the last probe it ran for */
	_Atomic uint64_t sent_ns;  /* when the last probe was sent */
	_Atomic uint64_t late_ns;  /* how long it waited for the CPU */
	unsigned late;		   /* guard: late answers in a row */
};

static int set_policy(pid_t tid, int policy)
{
	struct sched_param sp = { 0 };

	return sched_setscheduler(tid, policy, &sp) ? -errno : 0;
}

/* Every handler to @policy; 0, or the first error. */
static int handlers_policy(struct upg *u, int policy)
{
	int err = 0, e;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		e = set_policy(atomic_load(&u->handlers[i].tid), policy);
		if (e && !err)
			err = e;
	}
	return err;
}

static void *canary_main(void *arg)
{
	struct upg_canary *c = arg;
	cpu_set_t set;
	uint32_t s;

	upg_internal_enter();
	pthread_setname_np(pthread_self(), "upg-canary");
	CPU_ZERO(&set);
	CPU_SET(c->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	set_policy(0, SCHED_IDLE);
	while (!atomic_load(&c->u->stopping)) {
		s = atomic_load(&c->sent);
		if (s != atomic_load(&c->answered)) {
			atomic_store(&c->late_ns,
				     upg_now_ns() - atomic_load(&c->sent_ns));
			atomic_store(&c->answered, s);
		}
		upg_futex_wait(&c->sent, s, NULL);
	}
	return NULL;
}

static void canary_probe(struct upg_canary *c)
{
	atomic_store(&c->sent_ns, upg_now_ns());
	atomic_fetch_add(&c->sent, 1);
	upg_futex_wake(&c->sent);
}

static bool faults_waiting(struct upg *u)
{
	struct pollfd pfd = { .fd = u->uffd, .events = POLLIN };

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/* The answers to the last probes: does an idle thread starve somewhere? */
static bool starved(struct upg_canary *c, unsigned n)
{
	bool bad = false;

	for (unsigned i = 0; i < n; i++) {
		if (atomic_load(&c[i].answered) != atomic_load(&c[i].sent))
			c[i].late = 2; /* not run for a whole tick */
		else if (atomic_load(&c[i].late_ns) > GUARD_LATE_NS)
			c[i].late++;
		else
			c[i].late = 0;
		bad |= c[i].late >= 2;
	}
	return bad;
}

/* Sleep @ns or until the runtime stops; false when it stops. */
static bool guard_sleep(struct upg *u, uint64_t ns)
{
	struct timespec ts;

	upg_deadline(&ts, ns);
	pthread_mutex_lock(&u->guard_lock);
	while (!atomic_load(&u->stopping))
		if (pthread_cond_timedwait(&u->guard_cond, &u->guard_lock, &ts))
			break;
	pthread_mutex_unlock(&u->guard_lock);
	return !atomic_load(&u->stopping);
}

/* One canary per handler CPU; false if none could start. */
static bool canaries_start(struct upg *u)
{
	unsigned n = 0;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_canary *c = &u->canaries[n];
		bool dup = u->handlers[i].cpu < 0;

		for (unsigned j = 0; j < n && !dup; j++)
			dup = u->canaries[j].cpu == u->handlers[i].cpu;
		if (dup)
			continue;
		*c = (struct upg_canary){ .u = u, .cpu = u->handlers[i].cpu };
		if (pthread_create(&c->thread, NULL, canary_main, c))
			break;
		pthread_setname_np(c->thread, "upg-canary"); /* named at once */
		n++;
	}
	u->ncanaries = n;
	return n > 0;
}

static void canaries_stop(struct upg *u)
{
	for (unsigned i = 0; i < u->ncanaries; i++) {
		struct upg_canary *c = &u->canaries[i];

		atomic_fetch_add(&c->sent, 1);
		upg_futex_wake(&c->sent);
		pthread_join(c->thread, NULL);
	}
	u->ncanaries = 0;
}

/*
 * Whether idle handlers could be raised again: a thread may always lower
 * itself to SCHED_IDLE, but leaving it takes CAP_SYS_NICE or RLIMIT_NICE.
 * Tried on the guard itself.
 */
static bool can_raise(void)
{
	return !set_policy(0, SCHED_IDLE) && !set_policy(0, SCHED_OTHER);
}

/*
 * Faults served per second over the next @ns (the guard sleeps meanwhile);
 * -1 if the runtime stops.
 */
static double served_rate(struct upg *u, uint64_t ns)
{
	uint64_t t0 = upg_now_ns(), s0 = total_served(u);

	if (!guard_sleep(u, ns))
		return -1;
	return (double)(total_served(u) - s0) * 1e9 /
	       (double)MAX(upg_now_ns() - t0, 1);
}

static void guard_loop(struct upg *u)
{
	uint64_t hold = GUARD_HOLD_MIN_NS, quiet = 0, quiet_until = 0;
	uint64_t served = total_served(u), now_served;
	double raised, idle;
	bool flowing = false;

	handlers_policy(u, SCHED_IDLE);
	while (guard_sleep(u, flowing ? GUARD_TICK_NS : GUARD_QUIET_NS)) {
		now_served = total_served(u);
		if (flowing && upg_now_ns() >= quiet_until &&
		    starved(u->canaries, u->ncanaries)) {
			handlers_policy(u, SCHED_OTHER);
			raised = served_rate(u, GUARD_TRIAL_NS);
			handlers_policy(u, SCHED_IDLE);
			idle = served_rate(u, GUARD_TRIAL_NS);
			if (raised < 0 || idle < 0)
				return;
			upg_stat_inc(upg_guard_stats(u),
				     UPG_STAT_handler_trials);
			upg_dbg("CPUs busy: %.0f faults/s raised, %.0f idle",
				raised, idle);
			if (idle * GUARD_WIN_DEN >= raised * GUARD_WIN_NUM) {
				/* The busy CPUs run threads that wait for our
				 * faults: idle handlers serve them as fast. */
				quiet = MIN(MAX(2 * quiet, GUARD_HOLD_MIN_NS),
					    GUARD_HOLD_MAX_NS);
				quiet_until = upg_now_ns() + quiet;
				hold = GUARD_HOLD_MIN_NS;
			} else {
				quiet = quiet_until = 0;
				handlers_policy(u, SCHED_OTHER);
				upg_stat_inc(upg_guard_stats(u),
					     UPG_STAT_handler_raises);
				upg_dbg("fault handlers at normal priority "
					"for %llu ms",
					(unsigned long long)(hold / 1000000));
				if (!guard_sleep(u, hold))
					return;
				handlers_policy(u, SCHED_IDLE);
				hold = MIN(2 * hold, GUARD_HOLD_MAX_NS);
			}
			for (unsigned i = 0; i < u->ncanaries; i++)
				u->canaries[i].late = 0;
			now_served = total_served(u);
		}
		/*
		 * Probe only while faults flow (served, or waiting to be
		 * read: starved handlers serve none): idle handlers matter
		 * then.
		 */
		flowing = now_served != served || faults_waiting(u);
		served = now_served;
		for (unsigned i = 0; flowing && i < u->ncanaries; i++)
			canary_probe(&u->canaries[i]);
	}
}

static void *guard_main(void *arg)
{
	struct upg *u = arg;

	upg_internal_enter();
	pthread_setname_np(pthread_self(), "upg-guard");
	for (unsigned i = 0; i < u->nhandlers; i++)
		while (!atomic_load(&u->handlers[i].tid))
			if (!guard_sleep(u, 1000000))
				return NULL;
	if (!can_raise()) {
		upg_info("fault handlers at normal priority: leaving "
			 "SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE");
		return NULL;
	}
	if (!canaries_start(u)) {
		upg_warn("fault handlers at normal priority: cannot start "
			 "their canary threads");
		return NULL;
	}
	guard_loop(u);
	canaries_stop(u);
	return NULL;
}

static void guard_start(struct upg *u)
{
	int err;

	if (u->p.idle_handlers != UPG_IDLE_AUTO || u->nhandlers < 2)
		return;
	if (!u->canaries) /* a fork child has its parent's */
		u->canaries = upg_map(u->nhandlers * sizeof(*u->canaries));
	if (!u->canaries) {
		upg_warn("fault handlers stay at normal priority: %s",
			 "out of memory");
		return;
	}
	err = pthread_create(&u->guard, NULL, guard_main, u);
	if (err) {
		upg_warn("fault handlers stay at normal priority: cannot "
			 "start their guard thread: %s",
			 strerror(err));
		return;
	}
	pthread_setname_np(u->guard, "upg-guard"); /* named at once */
	u->guard_started = true;
}

static void guard_stop(struct upg *u)
{
	if (!u->guard_started)
		return;
	pthread_mutex_lock(&u->guard_lock);
	pthread_cond_broadcast(&u->guard_cond);
	pthread_mutex_unlock(&u->guard_lock);
	pthread_join(u->guard, NULL);
	u->guard_started = false;
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

/*
 * Pin to our CPU and block every signal: the program's handlers must not
 * run on our threads, and a signal must not interrupt a fault resolution.
 */
static void handler_setup(struct upg_handler *h)
{
	sigset_t all;
	cpu_set_t set;
	char name[16];

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (h->cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(h->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	atomic_store(&h->tid, (pid_t)syscall(SYS_gettid));
	if (h->u->p.idle_handlers == UPG_IDLE_ON)
		set_policy(0, SCHED_IDLE); /* AUTO: the guard sets it */
	snprintf(name, sizeof(name), "upg-fault/%d", h->cpu);
	pthread_setname_np(pthread_self(), name);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
}

/* Blocking read; the only point where upg_fault_stop() may cancel us. */
static ssize_t read_msgs(struct upg_handler *h, struct uffd_msg *m)
{
	ssize_t n;

	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	n = read(h->u->uffd, m, sizeof(*m) * MSG_BATCH);
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	return n;
}

static void *handler_main(void *arg)
{
	struct upg_handler *h = arg;
	struct uffd_msg m[MSG_BATCH];
	ssize_t n;

	upg_internal_enter(); /* for good: this thread is the runtime's */
	handler_setup(h);
	while (!atomic_load_explicit(&h->u->stopping, memory_order_relaxed)) {
		n = read_msgs(h, m);
		if (n <= 0) {
			if (n < 0 && errno != EINTR && errno != EAGAIN) {
				upg_err("reading userfaultfd: %s",
					strerror(errno));
				break;
			}
			continue;
		}
		pthread_rwlock_rdlock(&h->u->regions_lock);
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(*m); i++)
			upg_fault_dispatch(h, &m[i]);
		pthread_rwlock_unlock(&h->u->regions_lock);
		maybe_park(h);
	}
	return NULL;
}

/* The CPUs we may run on, in order; handlers are pinned one per CPU. */
static unsigned allowed_cpus(int *cpus, unsigned max)
{
	cpu_set_t set;
	unsigned n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

static int handler_init(struct upg *u, struct upg_handler *h, int cpu)
{
	size_t len = (size_t)u->p.cluster << UPG_PAGE_SHIFT;

	h->u = u;
	h->cpu = cpu;
	h->buf = upg_map(upg_handler_buf_bytes(u));
	h->zero = upg_map(len);
	h->dropped = upg_map(UPG_DROP_RING * sizeof(*h->dropped));
	return h->buf && h->zero && h->dropped ? 0 : -ENOMEM;
}

static int start_handlers(struct upg *u)
{
	int err;

	atomic_store(&u->active_handlers, u->nhandlers);
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		err = -pthread_create(&h->thread, NULL, handler_main, h);
		if (err)
			return upg_seterr(err, "cannot start fault handler: %s",
					  strerror(-err));
		h->started = true;
	}
	guard_start(u);
	return 0;
}

int upg_fault_start(struct upg *u)
{
	int cpus[1024];
	unsigned ncpu = allowed_cpus(cpus, ARRAY_SIZE(cpus));
	int err;

	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		err = handler_init(u, h, ncpu ? cpus[i % ncpu] : -1);
		if (err)
			return err;
		h->stats = &u->shards[i];
	}
	return start_handlers(u);
}

/* In a fork child: the handler threads did not survive fork(). */
int upg_fault_restart(struct upg *u)
{
	u->guard_started = false; /* nor did the guard */
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		h->started = false;
		atomic_store(&h->parked, false);
		atomic_store(&h->tid, 0);
		upg_io_destroy(h->io); /* shared with the parent: made anew */
		h->io = NULL;
		h->seen_total = total_served(u);
		h->seen_served = atomic_load(&h->served);
	}
	return start_handlers(u);
}

void upg_fault_stop(struct upg *u)
{
	atomic_store(&u->stopping, true);
	guard_stop(u);
	if (u->canaries)
		upg_unmap(u->canaries, u->nhandlers * sizeof(*u->canaries));
	u->canaries = NULL;
	pthread_mutex_lock(&u->park_lock);
	pthread_cond_broadcast(&u->park_cond);
	pthread_mutex_unlock(&u->park_lock);
	for (unsigned i = 0; i < u->nhandlers; i++) {
		struct upg_handler *h = &u->handlers[i];

		if (h->started) {
			pthread_cancel(h->thread);
			pthread_join(h->thread, NULL);
		}
		upg_unmap(h->buf, upg_handler_buf_bytes(u));
		if (h->rbuf)
			upg_unmap(h->rbuf, 2 * upg_handler_buf_bytes(u));
		upg_io_destroy(h->io);
		upg_unmap(h->zero, (size_t)u->p.cluster << UPG_PAGE_SHIFT);
	}
	upg_free_dropped(u); /* (the evictor has stopped) */
	for (unsigned i = 0; i < u->nhandlers; i++) {
		upg_unmap(u->handlers[i].dropped,
			  UPG_DROP_RING * sizeof(*u->handlers[i].dropped));
		u->handlers[i].dropped = NULL;
	}
}
