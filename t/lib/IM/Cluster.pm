package IM::Cluster;

# Helpers of the tests with several workers or nodes (t/21*, t/22*): one
# node's configuration; log in and learn, from the server's own log, which
# worker took the session; check a message end to end; read /status.
#
#   use IM::Cluster qw/node login chat firsts status/;
#   my $a = node(name => 'a', port => 9095, redis => $redis, uc => $uc);
#   $t->{im_port} = port(9095);                # where login() connects
#   my ($c, $code, $pid) = login($t, 2001, client_id => 2, auto_ack => 0);
#   chat($alice, $bob, 'a -> b');              # one ok(): acked and delivered
#   my @ids = firsts($c, 10);                  # MsgIds of the first 10 pushes
#   my $st = status(port(9095));               # /status of whichever worker

use strict;
use warnings;

use Exporter qw/import/;
use Test::More ();
use JSON::PP ();
use Test::Nginx qw/http_get port/;
use IM::Client;
use IM::Proto qw/:const/;

our @EXPORT_OK = qw/node login chat firsts status/;

# one node: an nginx instance (not started yet) on %%PORT_<port>%% with its
# own im_node_id and im_zone, sharing the redis-server and user centre given.
# Options: workers (2; a reuseport listener when more than one), timers
# (directive => value), policy (im_login_policy), delivery (im_delivery),
# status (a /status location), ws (more directives for the /ws location),
# main (more in the main context; with no redis, no im_redis line),
# locations (more text in the server block), http (more in the http block).
sub node {
    my (%o) = @_;
    my $t = Test::Nginx->new()->has(qw/http redis/);
    my $tm = $o{timers} || {};
    my $timers = join "\n", map { "$_ $tm->{$_};" } sort keys %$tm;
    my $workers = $o{workers} // 2;
    my $reuse = $workers > 1 ? ' reuseport' : '';
    my $policy = $o{policy} ? "im_login_policy $o{policy};" : '';
    my $delivery = $o{delivery} ? "im_delivery $o{delivery};" : '';
    my $status = $o{status} ? 'location = /status { im_status; }' : '';
    $t->write_file_expand('nginx.conf', <<"EOF");
%%TEST_GLOBALS%%
daemon on;
worker_processes $workers;
${\ ($o{redis} ? 'im_redis ' . $o{redis}->addr . ';' : '') }
${\ ($o{main} // '') }
im_node_id $o{name};
im_zone im 1m;
$timers
$policy
$delivery
events { }
http {
    %%TEST_GLOBALS_HTTP%%
    ${\ ($o{http} // '') }
    server {
        listen 127.0.0.1:%%PORT_$o{port}%%$reuse;
        location /ws { im_websocket; im_auth /_auth; ${\ ($o{ws} // '') } }
        $status
        ${\ ($o{locations} // '') }
        ${\ $o{uc}->auth_location }
    }
}
EOF
    $t->{im_port} = port($o{port});
    $t->{im_name} = $o{name};
    return $t;
}

# log in uid $uid (user "u$uid", password "pw") on $t's port; returns
# (client, code, pid of the worker that logged it in)
sub login {
    my ($t, $uid, %o) = @_;
    my $c = IM::Client->new(port => $o{port} // $t->{im_port},
        auto_pong => 1, uid => $uid, auto_ack => $o{auto_ack} // 1);
    my $mark = $t->log_mark;
    my $code = $c->login("u$uid", 'pw', client_id => $o{client_id});
    my $pid;
    if (defined $code && $code == 0) {
        $pid = $t->wait_for_log(
            qr/#(\d+): [^\n]*im: uid $uid client \d+ logged in(?! elsewhere)\b/,
            from => $mark);
    }
    return ($c, $code, $pid);
}

# a message from $from to $to, acked and delivered: one test
sub chat {
    my ($from, $to, $name) = @_;
    my $id = $from->publish($to->uid, $name);
    my $ack = $from->expect(cmd => PUB_ACK, msgid => $id);
    my $m = $to->expect(cmd => PUBLISH, msgid => $id);
    Test::More::ok($ack && $m, $name);
    return $m;
}

# MsgIds of the first $n distinct pushes (waiting $timeout for each; the
# harness's bound by default)
sub firsts {
    my ($c, $n, $timeout) = @_;
    my (@ids, %seen);
    while (my $m = $c->expect(cmd => PUBLISH, timeout => $timeout // $Test::Nginx::TIMEOUT)) {
        push @ids, $m->{msgid} unless $seen{$m->{msgid}}++;
        last if @ids >= $n;
    }
    return @ids;
}

# im_status of whichever worker answers on $port
sub status {
    my ($port) = @_;
    my $r = http_get('/status', port => $port) // '';
    my ($body) = $r =~ /\r\n\r\n(.*)\z/s;
    return eval { JSON::PP::decode_json($body // '') } // {};
}

1;
