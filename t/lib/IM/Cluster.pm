package IM::Cluster;

# Helpers of the tests with several workers or nodes (t/21*, t/22*): log in
# and learn, from the server's own log, which worker took the session;
# check a message end to end; read /status.
#
#   use IM::Cluster qw/login chat firsts status/;
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
use Test::Nginx qw/http_get/;
use IM::Client;
use IM::Proto qw/:const/;

our @EXPORT_OK = qw/login chat firsts status/;

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

# MsgIds of the first $n distinct pushes (waiting $timeout for each)
sub firsts {
    my ($c, $n, $timeout) = @_;
    my (@ids, %seen);
    while (my $m = $c->expect(cmd => PUBLISH, timeout => $timeout // 3)) {
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
