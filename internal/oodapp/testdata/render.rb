# Renders one of the Open OnDemand app's ERB files the way OnDemand does:
# Ruby's ERB with trim_mode "-" (OnDemand's <%- and -%>), evaluated where
# the names of VARS.json are methods: for the job's templates and
# submit.yml.erb `context` (the form's values) and `session` (the
# dashboard's session: id, staged_root), each an OpenStruct as in
# ood_core; for view.html.erb host, port and every conn_param of
# connection.yml.
#
#   ruby render.rb IN.erb OUT VARS.json [--yaml]
#
# --yaml also checks that the output is YAML that Psych's safe_load takes,
# as OnDemand reads submit.yml.
require "erb"
require "json"
require "ostruct"
require "yaml"

src, out, vars_file, check = ARGV
vars = JSON.parse(File.read(vars_file))
scope = Object.new
vars.each do |name, value|
  value = OpenStruct.new(value) if value.is_a?(Hash)
  scope.define_singleton_method(name) { value }
end
text = ERB.new(File.read(src), trim_mode: "-").result(scope.instance_eval { binding })
YAML.safe_load(text) if check == "--yaml"
File.write(out, text)
