# Loads the Vagrantfile with a stand-in for Vagrant's config object (no
# Vagrant needed) and prints "name ip" per VM: deploy/check.sh compares that
# with configs/vagrant/hosts.env. Catches what `ruby -c` cannot (unknown
# names, missing keys). Run it on a copy: loading creates .vagrant/ secrets.
# Records every call on the config object as [path of names, args, kwargs].
class Recorder
  def initialize(log, path = []) ; @log = log ; @path = path ; end
  def method_missing(name, *args, **kw, &blk)
    @log << [@path + [name], args, kw]
    child = Recorder.new(@log, @path + [name])
    blk.call(child) if blk
    child
  end
  def respond_to_missing?(*) = true
end
module Vagrant
  LOG = []
  def self.configure(_version)
    yield Recorder.new(LOG)
  end
end
ARGV.replace(["status"])
load File.expand_path("Vagrantfile")
Vagrant::LOG.each_with_index do |(path, args, kw), i|
  next unless path.last == :network && args.first == "private_network"
  define = Vagrant::LOG[0...i].reverse.find { |p, _, _| p.last == :define }
  puts "#{define[1].first} #{kw[:ip]}"
end
