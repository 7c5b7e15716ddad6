package IM::UserCentre;

# The scriptable user centre (tools/im-usercentre) for one test file.
#
#   my $uc = IM::UserCentre->new(t => $t, users => "alice alice-secret 1001\n");
#   ... location /ws { im_websocket; im_auth /_auth; }
#       ${\ $uc->auth_location } ...   # the internal /_auth subrequest
#   $uc->set_users("alice alice-secret delay:3:1001\n");
#   my @req = $uc->requests;   # [{ body, params, accept, content_type, ... }]

use strict;
use warnings;

use JSON::PP ();
use Test::Nginx qw/free_port/;

our $PROGRAM = $ENV{IM_USERCENTRE} // "$Test::Nginx::REPO/tools/im-usercentre";
my $seq = 0;

sub new {
    my ($class, %o) = @_;
    my $t = $o{t} or die "IM::UserCentre->new needs t => \$t\n";
    my $n = ++$seq;
    my $self = bless {
        t     => $t,
        port  => $o{port} // free_port(),
        users => "usercentre$n.users",
        log   => $t->testdir . "/usercentre$n.log",
    }, $class;
    $self->set_users($o{users} // '');
    open my $fh, '>>', $self->{log} or die "$self->{log}: $!\n";
    close $fh;

    $t->run_daemon($^X, $PROGRAM, '--listen', $self->addr,
        '--users', $t->testdir . "/$self->{users}", '--log', $self->{log},
        ($o{workers} ? ('--workers', $o{workers}) : ()));
    $self->{pid} = $t->daemon_pid;
    $t->waitforsocket($self->addr, 20)
        or die "im-usercentre did not start on " . $self->addr . ":\n"
        . $t->daemon_log($self->{pid});
    return $self;
}

sub port { $_[0]{port} }
sub addr { '127.0.0.1:' . $_[0]{port} }
sub url  { 'http://' . $_[0]->addr . '/auth' }

# the internal location im_auth points to, proxying to this user centre as
# conf/ does; body => the proxy_set_body value, extra => more directives
sub auth_location {
    my ($self, %o) = @_;
    my $body = $o{body} // 'username=$im_username&password=$im_password';
    my $extra = $o{extra} // '';
    my $url = $self->url;
    return <<"EOF";
location = /_auth {
            internal;
            proxy_pass $url;
            proxy_method POST;
            proxy_pass_request_headers off;
            proxy_set_header Content-Type "application/x-www-form-urlencoded;charset=utf-8";
            proxy_set_header Accept application/json;
            proxy_set_body "$body";
            $extra
        }
EOF
}
sub pid  { $_[0]{pid} }

# replace the users file (atomically; the next request sees it)
sub set_users {
    my ($self, $text) = @_;
    $self->{t}->write_file($self->{users}, $text);
    return $self;
}

# raw log lines (one JSON object per request)
sub log_lines {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return ();
    my @l = <$fh>;
    chomp @l;
    return @l;
}

# decoded log lines; params = the decoded form body
sub requests {
    my ($self) = @_;
    my $json = JSON::PP->new->utf8;
    my @r;
    for my $l ($self->log_lines) {
        my $r = eval { $json->decode($l) } or next;
        utf8::downgrade($r->{body}, 1);    # bytes as received
        my %p;
        for my $kv (split /&/, $r->{body} // '') {
            my ($k, $v) = split /=/, $kv, 2;
            for ($k, $v) {
                next unless defined;
                tr/+/ /;
                s/%([0-9a-fA-F]{2})/chr hex $1/ge;
            }
            $p{$k} = $v;
        }
        $r->{params} = \%p;
        push @r, $r;
    }
    return @r;
}

sub stop {
    my ($self) = @_;
    $self->{t}->stop_daemon($self->{pid}) if $self->{pid};
    delete $self->{pid};
    return $self;
}

1;
