#!/usr/bin/perl
# Redis Sentinel (issue 16 item 3; decision 041): a master, one replica and
# three sentinels started here on 127.0.0.1, with low sentinel timers; two
# nginx nodes find the master through the sentinels by its name.
#
#   - failover under traffic, twice: a sender on node a keeps sending 1:1
#     messages to a uid online on node b and to an offline one; the
#     replica's link to the master is cut (a password set on the master,
#     then CLIENT KILL TYPE replica) and 0.3 s later the master is killed
#     with kill -9, so that appends the master answered meanwhile are not
#     on the replica; the sentinels promote the replica; the nodes
#     follow (+switch-master, and asking again on reconnect), and the old
#     master is started again as the new master's replica (REPLICAOF here,
#     as the sentinels would after 8 s or more).
#     Every publish is answered (an ack or a refusal); messages acked and
#     never delivered (the live recipient's pushes, then both recipients'
#     inboxes read at a login after the end) are counted: 0 with
#     im_redis_wait 1 (asserted); with the option off the count and the
#     time from the kill to the first ack of a message sent after it are
#     only reported (note lines: they depend on timing);
#   - the transaction path (recipient online on the other node: MULTI,
#     RPUSH, PUBLISH, EXEC) holds the sender's ack until WAIT answers:
#     with im_redis_wait 1 and the replica stopped (SIGSTOP), each
#     message is refused, none acked, though the recipient has it; acked
#     again once the replica runs;
#   - the first sentinel of the list is down: the next one answers, the log
#     names the address that refused;
#   - a master name the sentinels do not know: logins answered 2, the log
#     says so;
#   - a "sentinel" (a stand-in here) that names the master by a host name
#     (announce-hostnames): not resolved, the log says what to change,
#     logins answered 2; then names a replica: the connection refuses it
#     ("not a master"), logins answered 2; its +switch-master to the real
#     master is followed;
#   - nginx -t refuses the bad combinations (the example of
#     docs/OPERATIONS.md's "Redis Sentinel" section is checked with the
#     other examples of the docs by t/015-doc-examples.t).
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port free_port wait_until/;
use Time::HiRes qw/time sleep/;
use IO::Socket::INET;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Cluster qw/login/;
use IM::Setup qw/write_conf/;
use IM::Failover;

my $t = Test::Nginx->new()->has(qw/http redis/);    # helpers and daemons
my $d = $t->testdir;
my $uc = IM::UserCentre->new(t => $t, users => "* * uid-from-name\n");

my $NAME = 'immaster';

my %TIMERS = (
    # no check here is about pings or re-pushes (a loaded machine must not
    # close a session the test reads late)
    im_ping_interval   => '300s',
    im_ping_timeout    => '5s',
    im_repush_interval => '60s',
    im_close_grace     => '1s',
    im_redis_timeout   => '3s',
);

###############################################################################
# master, replica, three sentinels

# a full resync starts at once, not after Redis's default 5 s wait for
# more replicas: the time until a replica has the writes again is ours
my @SYNC = ('--repl-diskless-sync-delay', '0');
my @redis = (IM::Redis->new(t => $t, args => [@SYNC]));
push @redis, IM::Redis->new(t => $t,
    args => [@SYNC, '--replicaof', '127.0.0.1', $redis[0]->port]);
my %by_port = map { $_->port => $_ } @redis;

sub linked {
    my ($replica) = @_;
    return 0 unless $replica;
    my $info = eval { $replica->cmd(INFO => 'replication') } // '';
    return $info =~ /role:slave/ && $info =~ /master_link_status:up/;
}

ok(wait_until(sub { linked($redis[1]) }, 30), 'the replica is linked')
    or BAIL_OUT('no replication');

my @sentinels;
for my $i (1 .. 3) {
    my $port = free_port();
    my $dir = "$d/sentinel$i";
    mkdir $dir or die "mkdir $dir: $!\n";
    $t->write_file("sentinel$i/sentinel.conf", <<"EOF");
port $port
bind 127.0.0.1
daemonize no
protected-mode no
dir $dir
logfile $dir/sentinel.log
sentinel monitor $NAME 127.0.0.1 ${\ $redis[0]->port} 2
sentinel down-after-milliseconds $NAME 1000
sentinel failover-timeout $NAME 5000
sentinel parallel-syncs $NAME 1
EOF
    $t->run_daemon($IM::Redis::REDIS, "$dir/sentinel.conf", '--sentinel');
    # a RESP client on the sentinel's port (not started: it is running)
    push @sentinels, IM::Redis->new(t => $t, port => $port, no_start => 1);
}

# what every sentinel says of the master: its port, when they agree
sub master_port { IM::Failover::master_port(\@sentinels, $NAME) }

# the sentinels know each other and a replica in good health
sub settled { IM::Failover::settled(\@sentinels, $NAME) }

# the one the sentinels do not name
sub replica {
    my $p = master_port() // return undef;
    my ($r) = grep { $_->port != $p } @redis;
    return $r;
}

ok(wait_until(\&settled, 60), 'three sentinels agree on the master and '
    . 'its replica') or BAIL_OUT('sentinels not settled');

my $SENTINELS = join ' ', map { $_->addr } @sentinels;
my $MAIN = "im_redis_sentinel $SENTINELS;\nim_redis_sentinel_master $NAME;\n";

sub node {
    my (%o) = @_;
    return IM::Cluster::node(workers => 1, uc => $uc,
        %o, timers => { %TIMERS, %{$o{timers} || {}} });
}

# a login, tried again while the node has no master yet (code 2)
sub login_ok { IM::Failover::login_ok(@_) }

###############################################################################
# failover under traffic

sub failover {
    my ($run, $extra) = @_;
    my $base = 25000 + 100 * $run;
    my ($S, $L, $Y) = ($base + 1, $base + 2, $base + 3);
    my $tag = $extra ? 'wait on' : 'wait off';

    my $old = $by_port{master_port() // 0}
        or return fail("$tag: the sentinels name no master");
    my ($replica) = grep { $_ != $old } @redis;
    my $a = node(name => "a$run", port => 9095, main => $MAIN . $extra);
    my $b = node(name => "b$run", port => 9096, main => $MAIN . $extra);
    $a->run();
    $b->run();

    my ($s) = login_ok($a, $S, auto_ack => 0);
    my ($l) = login_ok($b, $L);
    ok($s && $l, "$tag: sender on node a, recipient on node b")
        or return;

    my $r = IM::Failover::run(sender => $s, live => $l, live_uid => $L,
        offline_uid => $Y, tag => $tag, old => $old,
        old_port => $old->port, master_port => \&master_port,
        cut_after => 200, resume_after => 100, resume_secs => 2,
        relogin => sub { login_ok($b, $_[0]) },
        # a replica of the new master, as the sentinels would make it
        # (they wait 8 s first, longer in their "tilt" mode on a busy
        # machine)
        switched => sub {
            $old->start;
            eval { $old->cmd(REPLICAOF => '127.0.0.1', $_[0]) };
        });

    ok($r->{killed} && $r->{switched}, "$tag: the master was killed and "
        . 'the sentinels promoted the replica');
    ok($r->{resumed}, "$tag: messages sent after the kill are acked again");
    is($r->{unanswered}, 0, "$tag: every publish answered, an ack or a "
        . "refusal ($r->{sent})");
    my $lost = $r->{lost};
    note($r->{line});
    diag($r->{line}) if $ENV{IM_SENTINEL_FIGURES};

    if ($extra) {
        is($lost, 0, "$tag: no acked message lost ($lost of "
            . "$r->{acked})");
        my $re = qr/im redis: master "$NAME" is now at/;
        ok((grep { $_->error_log =~ $re } $a, $b) == 2,
            "$tag: both nodes logged the new master");
    }

    $s->close(1000) if $s;
    $a->stop();
    $b->stop();

    # the next run needs a master and a linked replica again: the old
    # master, or (after a failover back, which a busy machine can cause
    # with a 1 s down-after-milliseconds) the other one
    ok(wait_until(sub { settled() && linked(replica()) }, 90),
        "$tag: a master and its linked replica again") or diag(
        explain(eval { $old->cmd(INFO => 'replication') }),
        explain([map { [eval { $_->cmd(SENTINEL => 'master', $NAME) },
            eval { $_->cmd(SENTINEL => 'replicas', $NAME) }] } @sentinels]));
}

failover(1, '');
failover(2, "im_redis_wait 1 1s;\n");

###############################################################################
# the transaction path holds the sender's ack until WAIT answers: the
# recipient is online on the other node, so each message goes as MULTI,
# RPUSH, PUBLISH, EXEC; with the replica stopped (SIGSTOP) it cannot ack,
# WAIT answers 0 after its timeout, and each message is refused although
# EXEC succeeded (the recipient has its copy: decision 041). A build that
# answered the sender at EXEC's reply acks them all.

sub proc_state {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return '';
    my ($state) = <$fh> =~ /^\d+ \(.*\) (\S)/;
    return $state // '';
}

{
    my $wait = "im_redis_wait 1 500ms;\n";
    my $a = node(name => 'f', port => 9095, main => $MAIN . $wait);
    my $b = node(name => 'g', port => 9096, main => $MAIN . $wait);
    $a->run();
    $b->run();
    my ($s) = login_ok($a, 25601, auto_ack => 0);
    my ($r) = login_ok($b, 25602);

    # with the replica there, the same path acks
    my $id = $s->publish(25602, 'replica linked');
    ok($s->expect(cmd => PUB_ACK, msgid => $id)
        && $r->expect(cmd => PUBLISH, msgid => $id),
        'WAIT hold: acked and delivered while the replica acks');

    my $replica = replica();
    my $mark = $a->log_mark;
    kill 'STOP', $replica->pid;
    ok(wait_until(sub { proc_state($replica->pid) eq 'T' }, 10),
        'WAIT hold: the replica is stopped');

    my @ids = map { $s->publish(25602, "replica stopped $_") } 1 .. 10;
    my %want = map { $_ => 1 } @ids;
    my (%answer, %got);
    my $dl = time + 60;
    while (keys %answer < @ids && time < $dl) {
        my $m = $s->next(timeout => 1) or next;
        next unless defined $m->{msgid} && $want{$m->{msgid}};
        next unless $m->{cmd} == PUB_ACK || $m->{cmd} == INVALID_PACKET;
        $answer{$m->{msgid}} //= $m->{cmd} == PUB_ACK ? 'ack' : 'refused';
    }
    $dl = time + 20;
    while (time < $dl && grep { !$got{$_} } @ids) {
        $got{$_->{msgid}}++ for grep { $_->{cmd} == PUBLISH } $r->drain(0.2);
    }
    kill 'CONT', $replica->pid;

    my $acked = grep { $_ eq 'ack' } values %answer;
    my $refused = grep { $_ eq 'refused' } values %answer;
    is($acked, 0, 'WAIT hold: no message acked while no replica acks');
    is($refused, 10, 'WAIT hold: each of the 10 refused');
    is(scalar(grep { $got{$_} } @ids), 10, 'WAIT hold: EXEC ran (the '
        . 'recipient on the other node got each through the channel)');
    ok($a->wait_for_log(qr/WAIT: 0 of 1 replicas had the writes within /
        . qr/500 ms/, from => $mark), 'WAIT hold: the log says why');

    # the replica back: acks again
    my $back;
    my $tries = 0;
    wait_until(sub {
        my $id = $s->publish(25602, 'replica back ' . ++$tries);
        while (my $m = $s->next(timeout => 2)) {
            next unless defined $m->{msgid} && $m->{msgid} eq $id;
            $back = 1 if $m->{cmd} == PUB_ACK;
            last if $m->{cmd} == PUB_ACK || $m->{cmd} == INVALID_PACKET;
        }
        return $back || $tries >= 20;
    }, 60);
    ok($back, "WAIT hold: acked again once the replica runs ($tries tries)");

    $_->close(1000) for $s, $r;
    $a->stop();
    $b->stop();
    ok(wait_until(sub { settled() && linked(replica()) }, 90),
        'WAIT hold: a master and its linked replica again');
}

###############################################################################
# the first sentinel is down; a name nobody knows

{
    my $dead = free_port();
    my $n = node(name => 'c', port => 9095,
        main => "im_redis_sentinel 127.0.0.1:$dead $SENTINELS;\n"
            . "im_redis_sentinel_master $NAME;\n");
    $n->run();
    my ($c, $code) = login_ok($n, 25501);
    is($code, 0, 'first sentinel down: logins work through the next');
    ok($n->wait_for_log(qr/Connection refused\) while connecting to Redis, /
        . qr/redis: 127\.0\.0\.1:$dead \(sentinel\)/),
        'first sentinel down: the log names its address');
    my ($c2) = login_ok($n, 25502);
    my $id = $c->publish(25502, 'through the second sentinel');
    ok($c->expect(cmd => PUB_ACK, msgid => $id)
        && $c2->expect(cmd => PUBLISH, msgid => $id),
        'first sentinel down: a message acked and delivered');
    $_->close(1000) for $c, $c2;
    $n->stop();
}

{
    my $n = node(name => 'd', port => 9095,
        main => "im_redis_sentinel $SENTINELS;\n"
            . "im_redis_sentinel_master nosuchmaster;\n");
    $n->run();
    ok($n->wait_for_log(qr/sentinel does not know the master "nosuchmaster"/
        . qr/.*redis: 127\.0\.0\.1:\d+ \(sentinel\)/),
        'unknown master name: the log says so, naming the sentinel');
    my ($c, $code) = login($n, 25511);
    is($code, 2, 'unknown master name: logins answered 2');
    $c->close if $c;
    $n->stop();
}

###############################################################################
# a stand-in sentinel that names the replica, then switches to the master

{
    my $mport = master_port();
    my ($replica) = grep { $_->port != $mport } @redis;
    my $fake = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 8, ReuseAddr => 1) or die "listen: $!\n";
    my $fport = $fake->sockport;
    my $go = "$d/switch-now";
    my $byname = "$d/by-name";
    $t->write_file('by-name', '');

    # answers the question with the replica, confirms the subscription, and
    # sends +switch-master to the real master once $go exists
    $t->run_daemon(sub {
        # the node drops this connection at each question asked again: a
        # write to one it closed must not end the stand-in
        local $SIG{PIPE} = 'IGNORE';
        my @conns;
        my $deadline = time + 120;
        while (time < $deadline) {
            my $rin = '';
            vec($rin, fileno($fake), 1) = 1;
            select($rin, undef, undef, 0.05);
            if (vec($rin, fileno($fake), 1)) {
                my $c = $fake->accept or next;
                $c->blocking(0);
                push @conns, { s => $c, in => '', switched => 0 };
            }
            @conns = grep { !$_->{gone} } @conns;
            for my $k (@conns) {
                my $n = sysread($k->{s}, my $buf, 4096);
                if (defined $n && $n == 0) {
                    close $k->{s};
                    $k->{gone} = 1;
                    next;
                }
                $k->{in} .= $buf if $n;
                # SENTINEL get-master-addr-by-name <name>: 4 lines more
                my $ask = qr/^\*3\r\n\$8\r\nSENTINEL\r\n(?:[^\r]*\r\n){4}/;
                my $sub = qr/^\*2\r\n\$9\r\nSUBSCRIBE\r\n\$14\r\n
                             \+switch-master\r\n/x;
                while ($k->{in} =~ s/$ask//) {
                    my $p = -e $go ? $mport : $replica->port;
                    # by host name (announce-hostnames) while $byname is
                    my $h = -e $byname ? 'localhost' : '127.0.0.1';
                    syswrite($k->{s}, "*2\r\n\$" . length($h) . "\r\n$h"
                        . "\r\n\$" . length($p) . "\r\n$p\r\n");
                }
                if ($k->{in} =~ s/$sub//) {
                    syswrite($k->{s}, "*3\r\n\$9\r\nsubscribe\r\n\$14\r\n"
                        . "+switch-master\r\n:1\r\n");
                    $k->{sub} = 1;
                }
                if ($k->{sub} && -e $go && !$k->{switched}) {
                    my $msg = "$NAME 127.0.0.1 " . $replica->port
                        . " 127.0.0.1 $mport";
                    syswrite($k->{s}, "*3\r\n\$7\r\nmessage\r\n\$14\r\n"
                        . "+switch-master\r\n\$" . length($msg)
                        . "\r\n$msg\r\n");
                    $k->{switched} = 1;
                }
            }
        }
    });
    close $fake;

    my $n = node(name => 'e', port => 9095,
        main => "im_redis_sentinel 127.0.0.1:$fport;\n"
            . "im_redis_sentinel_master $NAME;\n");
    $n->run();
    ok($n->wait_for_log(qr/sentinel named the master "$NAME" by the host /
        . qr/name "localhost", which is not resolved here; set "sentinel /
        . qr/announce-hostnames no" on the sentinels/),
        'a master named by host name: the log says what to change');
    my ($c0, $code0) = login($n, 25520);
    is($code0, 2, 'a master named by host name: logins answered 2');
    $c0->close if $c0;
    unlink $byname;

    my $rp = $replica->port;
    ok($n->wait_for_log(qr/not a master: ROLE says "slave".*redis: /
        . qr/127\.0\.0\.1:$rp \(inbox\)/),
        'a replica named: "not a master", with its address');
    my ($c, $code) = login($n, 25521);
    is($code, 2, 'a replica named: logins answered 2');
    $c->close if $c;

    $t->write_file('switch-now', '');
    ok($n->wait_for_log(qr/master "$NAME" is now at 127\.0\.0\.1:$mport /
        . qr/\(was 127\.0\.0\.1:$rp\)/),
        '+switch-master: the node follows');
    my ($c2, $code2) = login_ok($n, 25522);
    is($code2, 0, '+switch-master: logins work on the master');
    $c2->close(1000) if $c2;
    $n->stop();
}

###############################################################################
# nginx -t

sub nginx_t {
    my ($main) = @_;
    write_conf($t, redis => bless({}, 'NoRedis'), uc => $uc, stream => 0,
        main => $main);
    return scalar `'$Test::Nginx::NGINX' -t -p '$d/' -c '$d/nginx.conf' 2>&1`;
}

for my $case (
    [ "im_redis 127.0.0.1:6379;\n$MAIN",
        qr/im_redis and im_redis_sentinel exclude each other/ ],
    [ "im_redis_sentinel $SENTINELS;",
        qr/im_redis_sentinel needs im_redis_sentinel_master/ ],
    [ "im_redis_sentinel_master $NAME;",
        qr/need im_redis_sentinel/ ],
    [ "${MAIN}im_redis_sentinel_user u;",
        qr/im_redis_sentinel_user needs im_redis_sentinel_password/ ],
    [ "${MAIN}im_redis_wait 1 3s;",
        qr/im_redis_wait's timeout \(3000 ms\) must be shorter than/ ],
    [ "${MAIN}im_redis_wait 0;", qr/im_redis_wait needs a number/ ],
    [ "${MAIN}im_redis_wait 1 0;", qr/invalid im_redis_wait timeout/ ],
    [ "${MAIN}im_redis_ssl on;\nim_redis_ssl_trusted_certificate $d/im.crt;",
        qr/im_redis_ssl_verify\ with\ im_redis_sentinel\ needs
           \ im_redis_ssl_name/x ],
    [ "im_redis_sentinel 127.0.0.1:notaport;",
        qr/invalid im_redis_sentinel address/ ],
) {
    my ($main, $re) = @$case;
    (my $name = $main) =~ s/\s+/ /g;
    like(nginx_t($main), $re, "nginx -t refuses: $name");
}

like(nginx_t("${MAIN}im_redis_wait 1 500ms;"), qr/test is successful/,
    'nginx -t accepts sentinels with im_redis_wait 1 500ms');

$t->allow_alerts(qr/\[emerg\]/);
$t->done_testing();

package NoRedis;
sub addr { undef }
