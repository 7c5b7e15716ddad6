#!/usr/bin/perl
# User centre answers (docs/PROTOCOL.md 3.1, 7) over ws and wss: pass / denied
# / 500 / garbage / too late (and other bad answers) -> 0 / 3 / 2 / 2 / 2;
# after a non-zero code the server waits im_close_grace (2s) for the client to
# close, then closes; a slow user centre does not block other logins.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use Test::Nginx qw/port/;
use Time::HiRes qw/time sleep/;
use IM::Redis;
use IM::UserCentre;
use IM::Client;
use IM::Proto qw/:all/;
use IM::Setup qw/write_conf transports each_transport no_sessions_left/;

my $t = Test::Nginx->new()->has(qw/http stream http_ssl openssl redis/);
my $redis = IM::Redis->new(t => $t);
# one set of users per transport (both run at once): ws.pass, wss.pass ...
my $users = <<'U';
pass      pw  2001
pass2     pw  2002
denied    pw  denied
wrongpw   right 2003
err500    pw  status:500
err404    pw  status:404
err302    pw  status:302
garbage   pw  garbage
nouid     pw  json:{"result":"pass"}
strange   pw  json:{"result":"maybe","uid":2004}
badjson   pw  json:{"result":"pass","uid":20
empty     pw  json:
closer    pw  close
late      pw  delay:4:2005
slowok    pw  delay:0.6:2006
uid0      pw  json:{"result":"pass","uid":0}
uidneg    pw  json:{"result":"pass","uid":-1}
uidbig    pw  json:{"result":"pass","uid":4294967296}
uidfrac   pw  json:{"result":"pass","uid":1.5}
array     pw  json:[{"result":"pass","uid":2007}]
nullres   pw  json:{"result":null,"uid":2007}
extra     pw  json:{"result":"pass","uid":2007,"name":"x","roles":[1,2]}
spaces    pw  json:  { "result" : "pass" , "uid" : 2008 }  
U
my $all = '';
for my $p (['ws', 0], ['wss', 100]) {
    (my $u = $users) =~ s/^(\S+)/$p->[0].$1/gm;
    $u =~ s/\b(20\d\d)$/$1 + $p->[1]/gme;
    $u =~ s/("uid" ?: ?)(20\d\d)\b/$1 . ($2 + $p->[1])/ge;
    $all .= $u;
}
my $uc = IM::UserCentre->new(t => $t, users => $all);
write_conf($t, redis => $redis, uc => $uc,
    main => "im_close_grace 2s;",
    auth => "proxy_read_timeout 2s;");
$t->run();

each_transport(sub {
    my ($name, $i, %o) = @_;
    my $u = sub { "$name.$_[0]" };
    my $pass2 = 2002 + 100 * $i;

    # -- every answer, all logins at once
    my @cases = (
        [pass => 'pw', 0], [denied => 'pw', 3], [wrongpw => 'pw', 3],
        [err500 => 'pw', 2], [err404 => 'pw', 2], [err302 => 'pw', 2],
        [garbage => 'pw', 2], [nouid => 'pw', 2], [strange => 'pw', 2],
        [badjson => 'pw', 2], [empty => 'pw', 2], [closer => 'pw', 2],
        [late => 'pw', 2], [slowok => 'pw', 0],
        # uid 0 is the system's; a uid must be a 32-bit unsigned integer
        [uid0 => 'pw', 2], [uidneg => 'pw', 2], [uidbig => 'pw', 2],
        [uidfrac => 'pw', 2], [array => 'pw', 2], [nullres => 'pw', 2],
        [extra => 'pw', 0], [spaces => 'pw', 0],
    );
    # handshakes first, then every CONNECT at once; acks are read in the
    # order they are due: all but 'late' (answered at proxy_read_timeout,
    # 2 s), then 'late'
    my (%c, %sent_at, %ack_at);
    $c{$_->[0]} = IM::Client->new(%o, auto_pong => 1) for @cases;
    for my $case (@cases) {
        my ($user, $pass) = @$case;
        $sent_at{$user} = time;
        $c{$user}->send(connect_msg($u->($user), $pass, role => 1));
    }
    my $ack = sub {
        my ($case) = @_;
        my ($user, $pass, $want) = @$case;
        my $m = $c{$user}->expect(cmd => CONNECT_ACK, timeout => 2 + $Test::Nginx::TIMEOUT);
        $ack_at{$user} = time;
        is($m && $m->{code}, $want, "$name: user centre '$user' -> code $want");
        is($m && $m->{raw}, pack('CC', 2, $want), "$name: '$user': exactly <<2,$want>>")
            if $user =~ /^(?:pass|denied|err500|garbage|late)$/;
    };
    $ack->($_) for grep { $_->[0] ne 'late' } @cases;

    # -- grace: the non-zero codes leave the connection open ~2s, then
    # close. "Open" is checked until 1.4s after the CONNECT was sent (the
    # grace starts later, at the ack), for the ones answered by then;
    # "closed" within the harness's bound after the grace (from the time
    # the ack was read, which is after the server sent it).
    my @refused = sort { $sent_at{$a} <=> $sent_at{$b} }
        map { $_->[0] } grep { $_->[2] != 0 } @cases;
    my (%early, %late);
    for my $user (grep { $_ ne 'late' } @refused) {
        my $ws = $c{$user}->ws;
        my $left = $sent_at{$user} + 1.4 - time;
        $early{$user} = 1 if $left > 0 ? $ws->wait_closed($left) : $ws->is_closed;
    }
    $ack->(grep { $_->[0] eq 'late' } @cases);
    ok($ack_at{late} - $sent_at{late} > 1.7,
        "$name: too-late answer: code 2 at proxy_read_timeout (2s), not before: "
        . sprintf('%.2fs', $ack_at{late} - $sent_at{late}));
    @refused = sort { $ack_at{$a} <=> $ack_at{$b} } @refused;
    for my $user (@refused) {
        my $ws = $c{$user}->ws;
        my $left = $ack_at{$user} + 2 + $Test::Nginx::TIMEOUT - time;
        $late{$user} = 1 unless $ws->wait_closed($left > 0.05 ? $left : 0.05);
    }
    is(join(' ', grep { $early{$_} } @refused), '',
        "$name: after a non-zero code the connection stays open for the grace (1.4s checked)");
    is(join(' ', grep { $late{$_} } @refused), '',
        "$name: ... and the server closes it after im_close_grace");

    # the accepted ones are live
    my @live;
    for my $user (qw/pass slowok/) {
        my $id = $c{$user}->publish($pass2, 'x');
        ok($c{$user}->expect(cmd => PUB_ACK, msgid => $id), "$name: '$user' session live");
        push @live, $id;
    }
    my $p2 = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
    is($p2->login($u->('pass2'), 'pw'), 0, "$name: pass2 logs in");
    # the two messages above, each waited for (bounded): a fixed drain can
    # end before they come on a loaded machine, and then they would count
    # as delivered from the refused connection below
    is(scalar(grep { $p2->expect(cmd => PUBLISH, msgid => $_) } @live), 2,
        "$name: pass2 gets the two messages sent before its login");

    # -- the client closes first during the grace: fine, nothing else; the
    # server closes at once, i.e. before the grace (2s from the answer, so
    # from after $t0) could have run out
    {
        my $c = IM::Client->new(%o);
        my $t0 = time;
        is($c->login($u->('denied'), 'pw'), 3, "$name: denied again");
        $c->close(1000);
        my $left = $t0 + 1.9 - time;
        ok($left > 0 && $c->wait_closed($left),
            "$name: client-initiated close during the grace completes at once");
    }

    # -- a refused connection is not a session: a PUBLISH on it is not acked
    {
        my $c = IM::Client->new(%o);
        is($c->login($u->('denied'), 'pw'), 3, "$name: denied (then publishes)");
        my $id = $c->publish($pass2, 'sneaky');
        my @got = $c->drain(1);
        ok(!grep({ $_->{cmd} == PUB_ACK } @got), "$name: no PUB_ACK on a refused connection");
        ok($p2->nothing_for(0.3), "$name: nothing delivered from a refused connection")
            or diag(explain([$p2->pending]));
    }

    # -- a slow user centre does not block another login
    # (the slow one is answered at proxy_read_timeout, 2s)
    {
        my $slow = IM::Client->new(%o);
        my $fast = IM::Client->new(%o, auto_pong => 1);
        $slow->send(connect_msg($u->('late'), 'pw'));
        is($fast->login($u->('pass'), 'pw'), 0, "$name: a login during a slow one is accepted");
        ok($slow->nothing_for(0.05), "$name: ... before the slow one is answered");
        my $id = $fast->publish($pass2, 'during');
        ok($fast->expect(cmd => PUB_ACK, msgid => $id),
            "$name: ... and its session works meanwhile");
        ok($slow->nothing_for(0.05), "$name: ... still before the slow one is answered");
        my $m = $slow->expect(cmd => CONNECT_ACK);
        is($m && $m->{code}, 2, "$name: the slow one still gets its answer (2)");
        $slow->close(1000);
        $fast->close(1000);
    }
    # -- the client goes away while its login is being checked: no crash,
    # no ghost session (the answer, pass, arrives after it left)
    {
        my $mark = $t->log_mark;
        my @gone;
        for my $how (qw/abort close disconnect/) {
            my $c = IM::Client->new(%o);
            $c->send(connect_msg($u->('slowok'), 'pw'));
            $how eq 'abort' ? $c->ws->abort : $how eq 'close' ? $c->close(1000) : $c->ws->disconnect;
            push @gone, $c;
        }
        my $c = IM::Client->new(%o);
        $c->send(connect_msg($u->('late'), 'pw'));
        $c->ws->abort;
        sleep 2.5;    # past slowok's 0.6s and late's proxy_read_timeout 2s
        my $id = $p2->publish(2006 + 100 * $i, 'to a user who left during login');
        ok($p2->expect(cmd => PUB_ACK, msgid => $id), "$name: a message to the one who left is acked");
        my $back = IM::Client->new(%o, auto_pong => 1, auto_ack => 1);
        is($back->login($u->('slowok'), 'pw'), 0, "$name: ... who logs in later");
        ok($back->expect(cmd => PUBLISH, msgid => $id), "$name: ... and gets it (it was stored, no ghost session took it)");
        ok(!grep({ $_->{cmd} == LOGOUT } $back->drain(0.3)), "$name: ... and no ghost session was kicked in between");
        $back->close(1000);
    }
    $p2->close(1000);
});

# every session ended: nothing leaked
{
    my ($ok, $st) = no_sessions_left(8);
    ok($ok, 'no session or user left in /status once every client is gone')
        or diag(explain($st));
}

$t->done_testing();
